"""P4 and P5 at the scale the goals name: the operator against plain kopf, in one run.

Why side by side with plain kopf: an operator's memory and restart cost are dominated by
what every kopf operator pays (the watch, the per-object state, the resume); the goals are
ratios against `bench/plain_kopf.py` (one creation handler writing
`status.observedGeneration`, kopf's defaults, no Google clients) measured in the same run,
on the same API server, with the same objects. Each side gets the machine to itself: the
baseline runs first, then the operator, each watching only its own namespace.

For each side:
1. started and left to settle: the empty process's RSS;
2. the create storm: `--objects` objects created 50 at a time, until all are handled
   (the operator: `Ready=True`; kopf: `status.observedGeneration` written);
3. at rest (quiet: under 0.1 CPU-s in 5 s): RSS;
4. SIGTERM and start again (from bytecode, as the image starts): the time and CPU-seconds
   until quiet, RSS then, and, for the operator, every Google call of the restart by
   method (the goal: one `ListJobs` per (identity, project, location) group, one
   `ListTasks` per queue, no writes).

`--kind scheduled` spreads ScheduledGcpCalls over `--groups` projects (one identity, one
location: that many sync groups); `--kind tasks` spreads GcpTasks over that many queues,
scheduled an hour ahead so that nothing dispatches; `--kind both` loads half of each.

    python -m bench scale --objects 10000 [--kind scheduled|tasks|both] [--groups 20]
"""

from __future__ import annotations

import asyncio
import compileall
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import grpc
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport

from bench.bench_relay import rss_mb
from bench.bench_tasks import Watch, an_hour_ahead, cpu_seconds, ready_true, spec
from bench.harness import LOCATION, PROJECT, REPO, Stack, process
from gcpcall.kube import KubeClient, load_connection

__all__ = ["run"]

QUIET_WINDOW, QUIET_CPU = 5.0, 0.1  # "quiet": under 0.1 CPU-s over 5 s
WRITES = {"CreateJob", "UpdateJob", "DeleteJob", "PauseJob", "ResumeJob", "RunJob",
          "CreateTask", "DeleteTask", "RunTask"}


def say(message: str) -> None:
    print(f"[scale] {message}", file=sys.stderr, flush=True)


def objects(kind: str, count: int, groups: int) -> list[tuple[str, dict[str, Any]]]:
    """(plural, body) for each object; `both` alternates the kinds."""
    when = an_hour_ahead()
    out: list[tuple[str, dict[str, Any]]] = []
    for i in range(count):
        this = kind if kind != "both" else ("scheduled", "tasks")[i % 2]
        group = (i // (2 if kind == "both" else 1)) % groups
        if this == "scheduled":
            out.append(("scheduledgcpcalls", {
                "apiVersion": "gcpcall.dev/v1alpha1", "kind": "ScheduledGcpCall",
                "metadata": {"name": f"s-{i:05d}"},
                "spec": {"schedule": "0 0 1 1 *", "timeZone": "Etc/UTC",
                         "project": f"bench-p{group:02d}",
                         "target": {"uri": "https://example.com/hook", "method": "POST"}}}))
        else:
            out.append(("gcptasks", {
                "apiVersion": "gcpcall.dev/v1alpha1", "kind": "GcpTask",
                "metadata": {"name": f"t-{i:05d}"},
                "spec": {**spec(when), "queue": f"q{group:02d}"}}))
    return out


def create_queues(s: Stack, groups: int) -> None:
    parent = f"projects/{PROJECT}/locations/{LOCATION}"
    client = tasks_v2.CloudTasksClient(
        transport=CloudTasksGrpcTransport(channel=grpc.insecure_channel(s.grpc_target)))
    for g in range(groups):
        client.create_queue(parent=parent,
                            queue=tasks_v2.Queue(name=f"{parent}/queues/q{g:02d}"))


async def until_quiet(pid: int, started: float, limit: float) -> tuple[float, float]:
    """(seconds from `started`, the process's CPU-seconds) at the start of the first
    QUIET_WINDOW in which it used under QUIET_CPU."""
    samples: list[tuple[float, float]] = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        now, cpu = time.monotonic(), cpu_seconds(pid)
        samples.append((now, cpu))
        old = [x for x in samples if now - x[0] >= QUIET_WINDOW]
        if old and cpu - old[-1][1] < QUIET_CPU:
            return old[-1][0] - started, old[-1][1]
        await asyncio.sleep(0.25)
    raise RuntimeError(f"pid {pid} not quiet within {limit:.0f} s")


class Handled:
    """Counts the objects of one namespace that the side under test has handled."""

    def __init__(self, done: Callable[[dict[str, Any]], bool]) -> None:
        self.done = done
        self.names: set[str] = set()

    def on_event(self, kind: str, obj: dict[str, Any]) -> None:
        if kind != "DELETED" and self.done(obj):
            self.names.add(f"{obj['kind']}/{obj['metadata']['name']}")


def ours_done(obj: dict[str, Any]) -> bool:
    return ready_true(obj)


def kopf_done(obj: dict[str, Any]) -> bool:
    return (obj.get("status") or {}).get("observedGeneration") is not None


def google_calls(s: Stack) -> dict[str, int]:
    counts: dict[str, int] = {}
    for call in s.calls():
        counts[call["method"]] = counts.get(call["method"], 0) + 1
    return counts


@contextmanager
def running(s: Stack, args: list[str], log: str) -> Iterator[subprocess.Popen[bytes]]:
    with process(args, s.work / log, env=s.operator_env()) as proc:
        yield proc
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)


async def side(s: Stack, name: str, args: list[str], bodies: list[tuple[str, dict[str, Any]]],
               done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    ns = s.namespace(f"scale-{name}")
    args = [*args, "--namespace", ns]
    kube = KubeClient(load_connection(s.kubeconfig))
    handled = Handled(done)
    plurals = sorted({p for p, _ in bodies})
    limit = max(300.0, len(bodies) * 0.2)
    out: dict[str, Any] = {}
    try:
        with running(s, args, f"scale-{name}.log") as proc:
            t0 = time.monotonic()
            await until_quiet(proc.pid, t0, 120)
            out["rss_empty_mb"] = round(rss_mb(proc.pid), 1)
            watches = [Watch(load_connection(s.kubeconfig), ns, handled.on_event, plural=p)
                       for p in plurals]
            for w in watches:
                w.start()
                await w.started()
            say(f"{name}: {len(bodies)} objects")
            gate = asyncio.Semaphore(50)

            async def create(plural: str, body: dict[str, Any]) -> None:
                async with gate:
                    await kube.request(
                        "POST", f"/apis/gcpcall.dev/v1alpha1/namespaces/{ns}/{plural}",
                        body=body)

            cpu0, started = cpu_seconds(proc.pid), time.monotonic()
            creating = asyncio.gather(*(create(p, b) for p, b in bodies))
            deadline = started + limit
            while len(handled.names) < len(bodies):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name}: {len(handled.names)} of {len(bodies)} "
                                       f"handled in {limit:.0f} s")
                await asyncio.sleep(0.1)
            out["storm_seconds"] = round(time.monotonic() - started, 1)
            await creating
            for w in watches:
                await w.stop()
            quiet_at, cpu = await until_quiet(proc.pid, started, limit)
            out["storm_cpu_seconds"] = round(cpu - cpu0, 2)
            out["quiet_after_storm_seconds"] = round(quiet_at, 1)
            out["rss_at_rest_mb"] = round(rss_mb(proc.pid), 1)
            say(f"{name}: storm {out['storm_seconds']} s, at rest {out['rss_at_rest_mb']} MB")
        s.admin("DELETE", "/calls")
        with running(s, args, f"scale-{name}-restart.log") as proc:
            started = time.monotonic()
            quiet_at, cpu = await until_quiet(proc.pid, started, limit)
            out["restart_seconds"] = round(quiet_at, 1)
            out["restart_cpu_seconds"] = round(cpu, 2)
            out["rss_after_restart_mb"] = round(rss_mb(proc.pid), 1)
            await asyncio.sleep(10)  # anything the restart still sends
            calls = google_calls(s)
            out["restart_google_calls"] = calls
            out["restart_google_writes"] = sum(v for k, v in calls.items() if k in WRITES)
            say(f"{name}: restart {out['restart_seconds']} s, "
                f"{out['restart_cpu_seconds']} CPU-s, calls {calls}")
    finally:
        await kube.close()
    return out


def run(s: Stack, count: int = 10_000, kind: str = "scheduled", groups: int = 20
        ) -> dict[str, Any]:
    # The image runs from bytecode compiled at build time (Dockerfile), and so does the
    # venv's site-packages (Makefile); the operator's own sources too, so that neither side
    # pays for compiling at each start where PYTHONDONTWRITEBYTECODE is set.
    compileall.compile_dir(REPO / "operator", quiet=1)
    if kind in ("tasks", "both"):
        create_queues(s, groups)
    bodies = objects(kind, count, groups)
    plain = [sys.executable, "-m", "kopf", "run", str(REPO / "bench" / "plain_kopf.py"),
             "--standalone"]
    cmd = os.environ.get("BENCH_OPERATOR_CMD")  # as in harness.Stack.operator
    ours = cmd.split() if cmd else [sys.executable, "-m", "gcpcall", "run",
                                    "--metrics-port", "0", "--liveness", ""]
    kopf_side = asyncio.run(side(s, "kopf", plain, bodies, kopf_done))
    ours_side = asyncio.run(side(s, "operator", ours, bodies, ours_done))
    return {
        "objects": count, "kind": kind, "groups": groups,
        "kopf": kopf_side, "operator": ours_side,
        "restart_time_ratio": round(ours_side["restart_seconds"] / kopf_side["restart_seconds"], 2),
        "restart_cpu_ratio": round(ours_side["restart_cpu_seconds"]
                                   / kopf_side["restart_cpu_seconds"], 2),
        "rss_at_rest_ratio": round(ours_side["rss_at_rest_mb"] / kopf_side["rss_at_rest_mb"], 3),
    }
