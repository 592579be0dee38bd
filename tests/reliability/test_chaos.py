"""The chaos suite at CI size (targets.md R1, R2, R2b; full size: `python -m bench chaos`).

R1: the operator SIGKILLed at random moments during a create storm, then restarted: no
duplicate and no orphaned job or task, every object Ready. R2: a fifth of every Cloud
Scheduler and Cloud Tasks RPC fails (UNAVAILABLE, some RESOURCE_EXHAUSTED): everything
converges, with a bounded number of calls against the same storm without faults. R2b: every
RPC fails for a while, then none: everything converges once the outage ends, and during it
the calls stay few (one recovery signal per service, not a retry per object per second).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.integration.conftest import (
    CLUSTER,
    LOCATION,
    PROJECT,
    Emulator,
    Objects,
    Operator,
    condition,
    instead_of,
    own_operator_for,
    wait_for,
)
from tests.integration.test_gcptask_lifecycle import later, make_queue
from tests.integration.test_gcptask_lifecycle import sample as task_sample
from tests.integration.test_scheduled_lifecycle import sample

if TYPE_CHECKING:
    from tests.conftest import ControlPlane

PARENT = f"projects/{PROJECT}/locations/{LOCATION}"


@pytest.fixture
def own_operator(
    operator: Operator, controlplane: ControlPlane, emulator: Emulator, namespace: str,
    tmp_path: Path,
) -> Iterator[Operator]:
    mine = own_operator_for(controlplane, emulator, tmp_path / "operator.log", namespace)
    with instead_of(operator, mine):
        try:
            yield mine
        finally:
            emulator.clear_faults()


def _all_ready(objects: Objects, namespace: str, names: list[str], reason: str) -> bool:
    items = {o["metadata"]["name"]: o for o in objects.api.list_namespaced_custom_object(
        "gcpcall.dev", "v1alpha1", namespace, objects.plural)["items"]}
    return all(condition(items.get(n), "Ready").get("reason") == reason for n in names)


def _storm(sgc: Objects, namespace: str, prefix: str, count: int) -> list[str]:
    names = [f"{prefix}-{i}" for i in range(count)]
    for name in names:
        sgc.create(namespace, sample(name))
    return names


def _jobs_of(emulator: Emulator, namespace: str) -> list[str]:
    ids = [j.name.rsplit("/jobs/", 1)[1] for j in emulator.scheduler().list_jobs(parent=PARENT)]
    return [i for i in ids if i.startswith(f"{CLUSTER}_{namespace}_")]


def _scheduler_calls(emulator: Emulator, since: int) -> list[dict[str, Any]]:
    return [c for c in emulator.calls()[since:] if c["service"].endswith("CloudScheduler")]


def test_r1_kills_during_a_storm_leave_no_duplicate_or_orphan(
    own_operator: Operator, sgc: Objects, gtask: Objects, namespace: str, emulator: Emulator
) -> None:
    make_queue(emulator, namespace)
    rng = random.Random(1)
    calls = [f"r1-{i}" for i in range(100)]
    tasks = [f"r1t-{i}" for i in range(40)]
    for i, name in enumerate(calls):
        sgc.create(namespace, sample(name))
        if i < len(tasks):
            gtask.create(namespace, task_sample(tasks[i], namespace, f"/r1/{i}",
                                                scheduleTime=later(3600)))
    for _ in range(3):  # SIGKILL at random moments while the storm is handled
        time.sleep(rng.uniform(1.0, 4.0))  # pacing the kills, not a check
        own_operator.kill()
        own_operator.start()
    wait_for(lambda: _all_ready(sgc, namespace, calls, "UpToDate"), timeout=180,
             what="every ScheduledGcpCall Ready")
    wait_for(lambda: _all_ready(gtask, namespace, tasks, "Created"), timeout=180,
             what="every GcpTask created")
    jobs = _jobs_of(emulator, namespace)
    assert sorted(jobs) == sorted(f"{CLUSTER}_{namespace}_{n}" for n in calls)  # none twice,
    # none orphaned (the emulator refuses a second job of one id: this also counts creates)
    queue = f"{PARENT}/queues/{namespace}"
    listed = [t.name for t in emulator.tasks().list_tasks(parent=queue)]
    assert len(listed) == len(set(listed)) == len(tasks)
    names = {(gtask.get(namespace, n) or {})["status"]["taskName"] for n in tasks}
    assert names == set(listed)


def test_r2_a_fifth_of_all_calls_failing_still_converges_without_a_retry_storm(
    own_operator: Operator, sgc: Objects, namespace: str, emulator: Emulator
) -> None:
    before = len(emulator.calls())
    clean = _storm(sgc, namespace, "r2-clean", 50)
    wait_for(lambda: _all_ready(sgc, namespace, clean, "UpToDate"), timeout=120,
             what="the storm without faults")
    fault_free = len(_scheduler_calls(emulator, before))
    emulator.fault("*", "UNAVAILABLE", 0.2)
    emulator.fault("*", "RESOURCE_EXHAUSTED", 0.05)
    try:
        start = len(emulator.calls())
        faulty = _storm(sgc, namespace, "r2-faulty", 50)
        wait_for(lambda: _all_ready(sgc, namespace, faulty, "UpToDate"), timeout=240,
                 what="the storm with faults converged")
        with_faults = len(_scheduler_calls(emulator, start))
    finally:
        emulator.clear_faults()
    # a quarter of the calls failing: each needs 1/(1-0.25) tries on average; allow twice that
    assert with_faults <= 2 * fault_free / 0.75, (with_faults, fault_free)


def test_r2b_an_outage_is_waited_out_on_one_signal_and_everything_converges_after(
    own_operator: Operator, sgc: Objects, namespace: str, emulator: Emulator
) -> None:
    emulator.fault("*", "UNAVAILABLE", 1.0)
    outage = 20.0
    try:
        start = len(emulator.calls())
        names = _storm(sgc, namespace, "r2b", 60)
        time.sleep(outage)  # the outage itself: how long Google is down
        during = len(_scheduler_calls(emulator, start))
    finally:
        emulator.clear_faults()
    wait_for(lambda: _all_ready(sgc, namespace, names, "UpToDate"), timeout=120,
             what="everything Ready once the outage ended")
    # Each object tried a few times until the service was marked down, then waited on the
    # shared signal while one probe tried every few seconds. On their own backoffs alone
    # (1, 2, 4, 8 s...) each object would have tried about 5 times in 20 s.
    assert during <= 3 * len(names), during
    jobs = _jobs_of(emulator, namespace)
    assert len(jobs) == len(set(jobs)) == len(names)

