"""The batched sync's timing and drift handling, with one injected clock and no server.

When a group is listed (after a due run, on follow-ups while the run has not shown, on the
drift check), what a list writes (runs, state), and how a job changed outside the operator
is put back, or reported when it cannot be.
"""

from __future__ import annotations

import asyncio
import datetime
from typing import Any, cast

import pytest
from google.cloud import scheduler_v1

from gcpcall.api.conditions import find_condition
from gcpcall.api.scheduled_call import parse_scheduled_call
from gcpcall.config import Settings
from gcpcall.gcp.scheduler_mapping import desired_job
from gcpcall.kube import ObjectRef
from gcpcall.reconcile.converge import JobConverger
from gcpcall.reconcile.status_writer import StatusWriter
from gcpcall.reconcile.sync import ScheduledSync
from gcpcall.reconcile.tracked import Tracked
from tests.unit._fakes import FakeClock, FakeEvents, FakeIdentities, FakeKube, FakeScheduler
from tests.unit._specs import DEFAULTS, call_spec

SETTINGS = Settings(drift_check_seconds=600.0, run_settle_seconds=2.0)
PARENT = "projects/my-project/locations/europe-west3"


class World:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.kube = FakeKube()
        self.scheduler = FakeScheduler()
        self.events = FakeEvents()
        self.status = StatusWriter(cast(Any, self.kube), clock=self.clock)
        converger = JobConverger(cast(Any, self.scheduler), cast(Any, self.events), "c")
        self.sync = ScheduledSync(SETTINGS, cast(Any, self.scheduler),
                                  cast(Any, FakeIdentities()), self.status, converger,
                                  cast(Any, self.kube), self.clock)

    def add(self, name: str, *, next_run_in: float | None = None, generation: int = 1,
            **spec: Any) -> Tracked:
        ref = ObjectRef("ScheduledGcpCall", "scheduledgcpcalls", "ns", name, f"uid-{name}")
        parsed = parse_scheduled_call(call_spec(**spec), DEFAULTS)
        job_name = f"{PARENT}/jobs/c_ns_{name}"
        desired = desired_job(parsed, job_name, f"managed-by: gcpcall-operator c/ns/{name}",
                              "runner@p.iam.gserviceaccount.com")
        stored = scheduler_v1.Job(desired)
        stored.state = scheduler_v1.Job.State.ENABLED
        if next_run_in is not None:
            stored.schedule_time = self.clock.now() + datetime.timedelta(seconds=next_run_in)
        self.scheduler.jobs[job_name] = stored
        self.kube.add(ref, {"jobName": job_name, "observedGeneration": generation},
                      generation=generation)
        tracked = Tracked.of(ref, parsed, "operator", stored, desired, generation, relay=False)
        self.sync.track(tracked)
        return tracked

    def status_of(self, name: str) -> dict[str, Any]:
        ref = ObjectRef("ScheduledGcpCall", "scheduledgcpcalls", "ns", name, f"uid-{name}")
        return dict(self.kube.objects[ref.path]["status"])

    def attempt(self, name: str, code: int = 0, next_run_in: float = 3600) -> None:
        """Cloud Scheduler ran the job now: last attempt, status, and the next run."""
        job = self.scheduler.jobs[f"{PARENT}/jobs/c_ns_{name}"]
        job.last_attempt_time = self.clock.now()
        job.status.code = code
        job.schedule_time = self.clock.now() + datetime.timedelta(seconds=next_run_in)


def lists(world: World) -> int:
    return world.scheduler.calls.count("ListJobs")


async def run_to(world: World, at: float) -> float:
    delta = at - (world.clock.monotonic() - 1000.0)
    world.clock.advance(delta)
    return await world.sync.step() - 1000.0


async def test_an_idle_group_is_listed_on_the_drift_check_only() -> None:
    world = World()
    world.add("idle")
    next_at = await run_to(world, 0)
    assert lists(world) == 0
    assert next_at == pytest.approx(600.0)
    assert await run_to(world, 599) == pytest.approx(600.0)
    assert lists(world) == 0
    assert await run_to(world, 600) == pytest.approx(1200.0)
    assert lists(world) == 1


async def test_a_due_run_is_listed_just_after_it_falls_due_then_followed_up() -> None:
    world = World()
    world.add("due", next_run_in=30)
    assert await run_to(world, 0) == pytest.approx(32.0)  # the run + the 2 s settle
    # at 32 s the job has not been attempted yet: follow-ups at 2, 4, 8 s after each list
    assert await run_to(world, 32) == pytest.approx(34.0)
    assert await run_to(world, 34) == pytest.approx(38.0)
    assert lists(world) == 2
    world.attempt("due", code=14)
    assert await run_to(world, 38) == pytest.approx(600.0)  # shown: back to the drift check
    assert lists(world) == 3
    status = world.status_of("due")
    assert status["runs"][0]["code"] == 14
    assert status["runs"][0]["result"] == "Failed"
    assert status["runs"][0]["scheduleTime"] == "2026-11-22T09:00:30Z"
    assert find_condition(status["conditions"], "LastRunSucceeded")["reason"] == "TargetError"


async def test_a_requested_run_is_listed_after_the_settle_time() -> None:
    world = World()
    tracked = world.add("now")
    await run_to(world, 10)
    world.sync.expect_run(tracked.ref)
    assert await run_to(world, 10) == pytest.approx(12.0)
    assert await run_to(world, 12) == pytest.approx(14.0)  # not attempted yet: follow up
    world.attempt("now")
    assert await run_to(world, 14) == pytest.approx(600.0)
    assert lists(world) == 2
    assert world.status_of("now")["lastRun"]["result"] == "Succeeded"


async def test_the_same_attempt_listed_again_writes_nothing() -> None:
    world = World()
    world.add("once", next_run_in=5)
    world.clock.advance(6)
    world.attempt("once")
    await run_to(world, 7)
    patches = len(world.kube.patches)
    await run_to(world, 700)
    assert lists(world) == 2
    assert len(world.kube.patches) == patches


async def test_drift_is_put_back_with_one_update_of_the_changed_field() -> None:
    world = World()
    world.add("drifty")
    world.scheduler.jobs[f"{PARENT}/jobs/c_ns_drifty"].schedule = "0 0 1 1 *"
    await run_to(world, 600)
    assert world.scheduler.calls == ["ListJobs", "UpdateJob"]
    assert world.scheduler.jobs[f"{PARENT}/jobs/c_ns_drifty"].schedule == "5 * * * *"
    assert ("Normal", "DriftCorrected",
            "the job was changed outside the operator; restored schedule") in world.events.posted
    ready = find_condition(world.status_of("drifty")["conditions"], "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "UpToDate")


async def test_drift_that_cannot_be_put_back_sets_ready_false_naming_the_field() -> None:
    world = World()
    world.add("stuck")
    world.scheduler.jobs[f"{PARENT}/jobs/c_ns_stuck"].http_target.uri = "https://x.example/"
    world.scheduler.refuse.add("UpdateJob")
    await run_to(world, 600)
    ready = find_condition(world.status_of("stuck")["conditions"], "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "PermissionDenied")
    assert "http_target.uri" in ready["message"]
    assert "PERMISSION_DENIED" in ready["message"]
    world.scheduler.refuse.clear()
    await run_to(world, 1200)
    ready = find_condition(world.status_of("stuck")["conditions"], "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "UpToDate")


async def test_a_job_deleted_outside_the_operator_is_recreated() -> None:
    world = World()
    world.add("gone")
    del world.scheduler.jobs[f"{PARENT}/jobs/c_ns_gone"]
    await run_to(world, 600)
    assert "CreateJob" in world.scheduler.calls
    assert f"{PARENT}/jobs/c_ns_gone" in world.scheduler.jobs
    assert [e[1] for e in world.events.posted] == ["JobMissing", "DriftCorrected"]


async def test_a_newer_spec_on_its_way_is_not_undone_by_the_drift_check() -> None:
    """The reconcile of generation 2 is under way: the sync's desired job (generation 1)
    is stale, so the sync neither updates the job nor reports Ready for it."""
    world = World()
    tracked = world.add("edited")
    world.scheduler.jobs[tracked.job_name].schedule = "0 0 1 1 *"  # as generation 2 wants
    world.kube.touch(tracked.ref)
    world.status.seen(tracked.ref, {"metadata": {"generation": 2, "resourceVersion": "x"},
                                    "status": world.status_of("edited")})
    await run_to(world, 600)
    assert "UpdateJob" not in world.scheduler.calls
    assert find_condition(world.status_of("edited").get("conditions"), "Ready") is None


async def test_untracked_objects_cost_no_list() -> None:
    world = World()
    tracked = world.add("leaving")
    world.sync.untrack(tracked.ref)
    assert world.sync.tracked() == 0
    assert await run_to(world, 600) == float("inf") - 1000.0
    assert lists(world) == 0


async def test_a_restart_lists_each_group_once_however_the_objects_trickle_in() -> None:
    """Resumed objects arrive one by one over many seconds (kopf's initial listing): the
    first ones are gathered into one list, and the later ones are checked against it."""
    world = World()
    objects = [world.add(f"o-{i}") for i in range(8)]
    for t in objects:
        world.sync.untrack(t.ref)
    world.scheduler.jobs[objects[-1].job_name].schedule = "0 0 1 1 *"  # drifted while down
    for t in objects[:3]:
        world.sync.track(t, list_soon=True)
    assert await run_to(world, 1) == pytest.approx(2.0)  # gathered: listed 2 s after
    await run_to(world, 2)
    assert lists(world) == 1
    for i, t in enumerate(objects[3:]):  # stragglers, seconds later
        world.sync.track(t, list_soon=True)
        await run_to(world, 10 + i)
    assert lists(world) == 1
    assert world.scheduler.calls.count("UpdateJob") == 1  # the drift, from the shared list


async def test_objects_resumed_while_the_restart_list_is_out_share_it() -> None:
    """kopf keeps resuming objects while the group's list is in flight (10,000 objects take
    seconds): they are covered by that list, not a second one."""
    world = World()
    objects = [world.add(f"o-{i}") for i in range(6)]
    for t in objects:
        world.sync.untrack(t.ref)
    world.scheduler.jobs[objects[-1].job_name].schedule = "0 0 1 1 *"  # drifted while down
    world.sync.track(objects[0], list_soon=True)
    world.scheduler.list_gate = gate = asyncio.Event()
    world.clock.advance(2)
    listing = asyncio.create_task(world.sync.step())
    await asyncio.sleep(0)
    assert lists(world) == 1  # out
    for t in objects[1:]:
        world.sync.track(t, list_soon=True)
    gate.set()
    await listing
    for at in (3, 5, 10, 60):
        await run_to(world, at)
    assert lists(world) == 1
    assert world.scheduler.calls.count("UpdateJob") == 1  # the drifted one, from that list


async def test_a_straggler_missing_from_the_shared_list_is_listed_again() -> None:
    """Not in the restart's list (made since): a list decides, never a blind create."""
    world = World()
    first = world.add("first")
    world.sync.untrack(first.ref)
    world.sync.track(first, list_soon=True)
    await run_to(world, 2)
    newer = world.add("newer")
    world.sync.untrack(newer.ref)
    world.sync.track(newer, list_soon=True)
    await run_to(world, 5)
    assert lists(world) == 2
    assert "CreateJob" not in world.scheduler.calls


def test_a_member_keeps_its_desired_job_as_a_value() -> None:
    world = World()
    member = world.add("a")
    desired = member.desired
    assert desired.name == f"{PARENT}/jobs/c_ns_a"
    assert desired.http_target.headers["Content-Type"] == "application/json"
    desired.schedule = "*/5 * * * *"  # a caller's copy: the member's job does not change
    assert member.desired.schedule == "5 * * * *"
    member.desired = desired
    assert member.desired.schedule == "*/5 * * * *"
    assert member.desired == desired
