"""The chaos suite at the size targets.md names (R1, R2, R2b); CI runs it smaller in
`tests/reliability/test_chaos.py`.

Why a bench and a test: the test proves the behaviour in minutes on every change; this
measures it at full size and prints the figures RESULTS.md records (how many objects, how
long until everything converged, how many Google calls against the fault-free count).

- R1: `--r1-calls` ScheduledGcpCalls and `--r1-tasks` GcpTasks created at once while the
  operator is SIGKILLed `--r1-kills` times at random moments 1 to 4 s apart and restarted:
  then every object Ready, no job or task twice, no job without its object.
- R2: a storm without faults, then the same storm with 20% UNAVAILABLE and 5%
  RESOURCE_EXHAUSTED on every RPC: both converge; the Cloud Scheduler calls of each, and
  their ratio against the bound (twice the 1/(1 - 0.25) tries a quarter failing needs).
- R2b: every RPC UNAVAILABLE for `--r2b-outage` seconds during a storm of `--r2b-calls`
  objects, then cleared: the seconds from the end of the outage until all are Ready (the
  goal: within 30 s), and the calls made during the outage. With one project the creates
  after the outage are paced by Cloud Scheduler's write quota (500 a minute per project,
  `ratelimit`): 400 objects take at least 42 s however soon the outage is seen to end, so
  the figures say how long the quota alone takes; `--r2b-projects` spreads the objects.

    python -m bench chaos [--r1-calls 500 --r1-tasks 200 --r1-kills 5]
                          [--r2-calls 500] [--r2b-calls 400 --r2b-outage 90]
                          [--r2b-projects 1] [--r3-calls 500] [--r7-calls 500]
                          [--chaos-parts r1,r2,r2b,r3,r7]

R3 and R7 (the API server's outages, the leader's death) are in `bench/outages.py`.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc
from google.auth.credentials import AnonymousCredentials
from google.cloud import scheduler_v1, tasks_v2
from google.cloud.scheduler_v1.services.cloud_scheduler.transports import (
    CloudSchedulerGrpcTransport,
)
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport
from kubernetes import client as k8s_client

from bench import outages
from bench.bench_tasks import QUEUE, an_hour_ahead, spec
from bench.harness import CLUSTER, GROUP, LOCATION, PROJECT, VERSION, Stack, call, wait_for

__all__ = ["run"]

PARENT = f"projects/{PROJECT}/locations/{LOCATION}"
SCHEDULER = "CloudScheduler"


def _task(name: str) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "GcpTask",
            "metadata": {"name": name}, "spec": spec(an_hour_ahead())}


class _Cluster:
    """The objects of one namespace, through the official Kubernetes client."""

    def __init__(self, s: Stack, namespace: str) -> None:
        self.api = k8s_client.CustomObjectsApi(s.api)
        self.ns = namespace

    def create(self, plural: str, bodies: list[dict[str, Any]]) -> None:
        for body in bodies:
            self.api.create_namespaced_custom_object(GROUP, VERSION, self.ns, plural, body)

    def items(self, plural: str) -> list[dict[str, Any]]:
        listed = self.api.list_namespaced_custom_object(GROUP, VERSION, self.ns, plural)
        assert isinstance(listed, dict)
        return list(listed["items"])

    def ready(self, plural: str, names: list[str], reason: str) -> bool:
        by_name = {o["metadata"]["name"]: o for o in self.items(plural)}
        return all(_reason(by_name.get(n)) == reason for n in names)


def _reason(obj: dict[str, Any] | None) -> str | None:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready" and c.get("status") == "True":
            return str(c.get("reason"))
    return None


def _scheduler(s: Stack) -> scheduler_v1.CloudSchedulerClient:
    return scheduler_v1.CloudSchedulerClient(transport=CloudSchedulerGrpcTransport(
        channel=grpc.insecure_channel(s.grpc_target), credentials=AnonymousCredentials()))  # type: ignore[no-untyped-call]


def _tasks(s: Stack) -> tasks_v2.CloudTasksClient:
    return tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(
        channel=grpc.insecure_channel(s.grpc_target), credentials=AnonymousCredentials()))  # type: ignore[no-untyped-call]


def _jobs_of(s: Stack, namespace: str, project: str = PROJECT) -> list[str]:
    parent = f"projects/{project}/locations/{LOCATION}"
    ids = [j.name.rsplit("/jobs/", 1)[1] for j in _scheduler(s).list_jobs(parent=parent)]
    return [i for i in ids if i.startswith(f"{CLUSTER}_{namespace}_")]


def _scheduler_calls(s: Stack, since: int) -> int:
    return sum(1 for c in s.calls()[since:] if c["service"].endswith(SCHEDULER))


def _scheduler_failed(s: Stack, since: int) -> int:
    return sum(1 for c in s.calls()[since:]
               if c["service"].endswith(SCHEDULER) and c["code"] != "OK")


def _timed(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    started = time.monotonic()
    wait_for(predicate, timeout, what, interval=0.5)
    return round(time.monotonic() - started, 1)


def r1(s: Stack, calls: int, tasks: int, kills: int) -> dict[str, Any]:
    ns = s.namespace("chaos-r1")
    cluster = _Cluster(s, ns)
    _tasks(s).create_queue(parent=PARENT, queue=tasks_v2.Queue(name=f"{PARENT}/queues/{QUEUE}"))
    call_names = [f"r1-{i:04d}" for i in range(calls)]
    task_names = [f"r1t-{i:04d}" for i in range(tasks)]
    rng = random.Random(1)

    def storm() -> None:
        cluster.create("scheduledgcpcalls", [call(n) for n in call_names])
        cluster.create("gcptasks", [_task(n) for n in task_names])

    creating = threading.Thread(target=storm)
    started = time.monotonic()
    for run_no in range(kills + 1):
        with s.operator(f"chaos-r1-{run_no}", namespaces=(ns,)) as proc:
            if run_no == 0:
                creating.start()
            if run_no < kills:
                # SIGKILL at a random moment while the storm is handled; the next start
                # is the restart
                time.sleep(rng.uniform(1.0, 4.0))  # pacing the kills, not a measurement
                proc.kill()
                proc.wait()
                continue
            creating.join()
            calls_s = _timed(lambda: cluster.ready("scheduledgcpcalls", call_names,
                                                   "UpToDate"), 600, "R1 calls Ready")
            tasks_s = _timed(lambda: cluster.ready("gcptasks", task_names, "Created"),
                             600, "R1 tasks created")
            ready_at = time.monotonic()
    jobs = _jobs_of(s, ns)
    expected = {f"{CLUSTER}_{ns}_{n}" for n in call_names}
    listed = [t.name for t in _tasks(s).list_tasks(parent=f"{PARENT}/queues/{QUEUE}")]
    names = {(o.get("status") or {}).get("taskName") for o in cluster.items("gcptasks")}
    out = {
        "calls": calls, "tasks": tasks, "kills": kills,
        "all_ready_seconds": round(ready_at - started, 1),
        "calls_ready_after_last_start_and_creates_s": calls_s, "tasks_ready_after_that_s": tasks_s,
        "jobs": len(jobs), "duplicate_jobs": len(jobs) - len(set(jobs)),
        "orphaned_jobs": len(set(jobs) - expected), "missing_jobs": len(expected - set(jobs)),
        "tasks_in_queue": len(listed), "duplicate_tasks": len(listed) - len(set(listed)),
        "tasks_not_named_by_an_object": len(set(listed) - names),
    }
    ok = (out["duplicate_jobs"] == out["orphaned_jobs"] == out["missing_jobs"] == 0
          and out["duplicate_tasks"] == out["tasks_not_named_by_an_object"] == 0
          and len(listed) == tasks)
    out["passed"] = ok
    return out


def r2(s: Stack, count: int) -> dict[str, Any]:
    ns = s.namespace("chaos-r2")
    cluster = _Cluster(s, ns)
    with s.operator("chaos-r2", namespaces=(ns,)):
        before = len(s.calls())
        clean = [f"r2-clean-{i:04d}" for i in range(count)]
        cluster.create("scheduledgcpcalls", [call(n) for n in clean])
        clean_s = _timed(lambda: cluster.ready("scheduledgcpcalls", clean, "UpToDate"), 600,
                         "R2 storm without faults")
        fault_free = _scheduler_calls(s, before)
        s.admin("POST", "/faults", {"method": "*", "code": "UNAVAILABLE", "rate": 0.2})
        s.admin("POST", "/faults", {"method": "*", "code": "RESOURCE_EXHAUSTED", "rate": 0.05})
        try:
            start = len(s.calls())
            faulty = [f"r2-faulty-{i:04d}" for i in range(count)]
            cluster.create("scheduledgcpcalls", [call(n) for n in faulty])
            faulty_s = _timed(lambda: cluster.ready("scheduledgcpcalls", faulty, "UpToDate"),
                              900, "R2 storm with faults")
            with_faults = _scheduler_calls(s, start)
            failed = _scheduler_failed(s, start)
        finally:
            s.admin("DELETE", "/faults")
    bound = 2 * fault_free / 0.75
    return {"objects": count, "fault_free_seconds": clean_s, "with_faults_seconds": faulty_s,
            "scheduler_calls_fault_free": fault_free, "scheduler_calls_with_faults": with_faults,
            "of_which_failed": failed,
            "ratio": round(with_faults / fault_free, 2), "bound": round(bound),
            "passed": with_faults <= bound}


def r2b(s: Stack, count: int, outage: float, projects: int) -> dict[str, Any]:
    ns = s.namespace(f"chaos-r2b-{projects}")
    cluster = _Cluster(s, ns)
    names = [f"r2b-{i:04d}" for i in range(count)]
    bodies = [call(n) for n in names]
    if projects > 1:  # spread over projects, each with its own write quota
        for i, body in enumerate(bodies):
            body["spec"]["project"] = f"{PROJECT}-{i % projects}"
    with s.operator(f"chaos-r2b-{projects}", namespaces=(ns,)):
        s.admin("POST", "/faults", {"method": "*", "code": "UNAVAILABLE", "rate": 1.0})
        try:
            start = len(s.calls())
            began = time.monotonic()
            cluster.create("scheduledgcpcalls", bodies)
            time.sleep(max(0.0, outage - (time.monotonic() - began)))  # the outage itself
            during = _scheduler_calls(s, start)
        finally:
            s.admin("DELETE", "/faults")
        cleared = time.monotonic()
        wait_for(lambda: any(_reason(o) == "UpToDate"
                             for o in cluster.items("scheduledgcpcalls")),
                 600, "R2b: a first object Ready after the outage", interval=0.2)
        first = round(time.monotonic() - cleared, 1)
        wait_for(lambda: cluster.ready("scheduledgcpcalls", names, "UpToDate"), 600,
                 "R2b: everything Ready once the outage ended", interval=0.5)
        after = round(time.monotonic() - cleared, 1)
    jobs = [j for p in range(max(projects, 1)) for j in _jobs_of(
        s, ns, PROJECT if projects == 1 else f"{PROJECT}-{p}")]
    # Cloud Scheduler's 500 writes a minute per project (`ratelimit`), a tenth of it as a
    # burst: the least time the creates can take once Google answers again
    quota_floor = max(0.0, (count / projects - 50) / (500 / 60))
    return {"objects": count, "projects": projects, "outage_seconds": outage,
            "first_ready_after_outage_seconds": first, "ready_after_outage_seconds": after,
            "write_quota_floor_seconds": round(quota_floor, 1),
            "scheduler_calls_during_outage": during,
            "calls_per_second_during_outage": round(during / outage, 1),
            "jobs": len(jobs), "duplicate_jobs": len(jobs) - len(set(jobs)),
            "passed": after <= 30.0 and len(set(jobs)) == len(jobs) == count}


def run(s: Stack, parts: tuple[str, ...] = ("r1", "r2", "r2b"), r1_calls: int = 500,
        r1_tasks: int = 200, r1_kills: int = 5, r2_calls: int = 500, r2b_calls: int = 400,
        r2b_outage: float = 90.0, r2b_projects: int = 1, r3_calls: int = 500,
        r7_calls: int = 500) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "r1" in parts:
        out["R1"] = r1(s, r1_calls, r1_tasks, r1_kills)
    if "r2" in parts:
        out["R2"] = r2(s, r2_calls)
    if "r2b" in parts:
        out["R2b"] = r2b(s, r2b_calls, r2b_outage, r2b_projects)
    if "r3" in parts:
        out["R3"] = outages.r3(s, r3_calls)
    if "r7" in parts:
        out["R7"] = outages.r7(s, r7_calls)
    return out
