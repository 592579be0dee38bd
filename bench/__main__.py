"""`python -m bench [p1] [p3] [p6] [p7] [tasks] [writes] [p8] [p9] [p10] [r6] [scale] [chaos]`:
run the benchmarks, print their figures.

Every figure is measured in one run on one stack (see harness.py); paste the printed lines
into RESULTS.md together with the command.
"""

from __future__ import annotations

import argparse
import json

from bench import bench_scheduled
from bench.harness import stack


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("which", nargs="*", default=["p1", "p3"],
                        choices=["p1", "p3", "p7", "tasks", "writes", "p8", "p9", "p10", "r6",
                                 "scale", "p6", "chaos"])
    parser.add_argument("--p1-n", type=int, default=50)
    parser.add_argument("--p3-n", type=int, default=1000)
    parser.add_argument("--p3-window", type=float, default=660.0,
                        help="idle seconds measured (default: one drift-check period + 60 s)")
    parser.add_argument("--p7-runs", type=int, default=5)
    parser.add_argument("--tasks-n", type=int, default=1000)
    parser.add_argument("--writes-n", type=int, default=300)
    parser.add_argument("--p8-fires", type=int, default=200,
                        help="p8: fires of each job (more fires: a steadier median)")
    parser.add_argument("--p8-gap", type=float, default=0.0,
                        help="p8: seconds between one fire's end and the next fire")
    parser.add_argument("--p10-seconds", type=float, default=600.0,
                        help="how long each followed operation runs")
    parser.add_argument("--objects", type=int, default=10_000, help="scale: objects per side")
    parser.add_argument("--kind", choices=["scheduled", "tasks", "both"], default="scheduled",
                        help="scale: which kind (both: half each)")
    parser.add_argument("--groups", type=int, default=20,
                        help="scale: projects (ScheduledGcpCall) or queues (GcpTask)")
    parser.add_argument("--p6-objects", type=int, default=1000)
    parser.add_argument("--p6-identities", type=int, default=10)
    parser.add_argument("--p6-lifetime", type=int, default=120,
                        help="p6: seconds the emulator's access tokens last (Google: 3600)")
    parser.add_argument("--p6-lifetimes", type=int, default=5,
                        help="p6: token lifetimes the operator is kept busy after the storm")
    parser.add_argument("--r1-calls", type=int, default=500)
    parser.add_argument("--r1-tasks", type=int, default=200)
    parser.add_argument("--r1-kills", type=int, default=5)
    parser.add_argument("--r2-calls", type=int, default=500)
    parser.add_argument("--r2b-calls", type=int, default=400)
    parser.add_argument("--r2b-outage", type=float, default=90.0,
                        help="r2b: seconds every RPC fails")
    parser.add_argument("--r2b-projects", type=int, default=1,
                        help="r2b: projects the objects are spread over")
    parser.add_argument("--r3-calls", type=int, default=500,
                        help="chaos R3: objects in each storm around the API server's outages")
    parser.add_argument("--r7-calls", type=int, default=500,
                        help="chaos R7: objects in the storm the leader dies in")
    parser.add_argument("--chaos-parts", default="r1,r2,r2b,r3,r7")
    args = parser.parse_args()
    with stack() as s:
        if "p1" in args.which:
            print("P1", json.dumps(bench_scheduled.p1(s, args.p1_n)), flush=True)
        if "p3" in args.which:
            print("P3", json.dumps(bench_scheduled.p3(s, args.p3_n, args.p3_window)), flush=True)
        if "p7" in args.which:
            print("P7", json.dumps(bench_scheduled.p7(s, args.p7_runs)), flush=True)
        if "tasks" in args.which:
            from bench import bench_tasks

            print("TASKS", json.dumps(bench_tasks.run(s, args.tasks_n)), flush=True)
        from bench import bench_relay

        if "p8" in args.which:
            print("P8", json.dumps(bench_relay.p8(s, args.p8_fires, args.p8_gap)), flush=True)
        for name in ("p9", "r6"):
            if name in args.which:
                print(name.upper(), json.dumps(getattr(bench_relay, name)(s)), flush=True)
        if "p10" in args.which:
            print("P10", json.dumps(bench_relay.p10(s, done_after=args.p10_seconds)), flush=True)
        if "scale" in args.which:
            from bench import scale

            print("SCALE", json.dumps(scale.run(s, args.objects, args.kind, args.groups)),
                  flush=True)
        if "p6" in args.which:
            from bench import tokens

            print("P6", json.dumps(tokens.run(s, args.p6_objects, args.p6_identities,
                                              args.p6_lifetime, args.p6_lifetimes)), flush=True)
        if "chaos" in args.which:
            from bench import chaos

            print("CHAOS", json.dumps(chaos.run(
                s, tuple(args.chaos_parts.split(",")), args.r1_calls, args.r1_tasks,
                args.r1_kills, args.r2_calls, args.r2b_calls, args.r2b_outage,
                args.r2b_projects, args.r3_calls, args.r7_calls)), flush=True)
        if "writes" in args.which:
            from bench import api_writes

            print("WRITES", json.dumps(api_writes.run(s, args.writes_n)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
