"""The task poller, the queue waits and the TTL expiries, with one injected clock.

When a task is looked at (its scheduleTime, follow-ups while an attempt is in flight),
when one ListTasks replaces many GetTasks, how a missing queue is waited for with one
GetQueue and a growing interval, and when a finished object is deleted.
"""

from __future__ import annotations

import datetime
from typing import Any, cast

import pytest

from gcpcall.api.conditions import find_condition
from gcpcall.api.observed import ObservedAttempt, ObservedQueue, ObservedTask
from gcpcall.kube import ObjectRef
from gcpcall.reconcile.expiry import Expiries
from gcpcall.reconcile.status_writer import StatusWriter
from gcpcall.reconcile.task_poller import TaskPoller, Watched
from gcpcall.reconcile.task_queues import QueueCache, QueueWaits
from tests.unit._fakes import FakeClock, FakeEvents, FakeIdentities, FakeKube, FakeTasks

QUEUE = "projects/p/locations/l/queues/q"
SETTLE = 1.0


class World:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.kube = FakeKube()
        self.tasks = FakeTasks()
        self.events = FakeEvents()
        self.status = StatusWriter(cast(Any, self.kube), clock=self.clock)
        self.expiries = Expiries(cast(Any, self.kube), self.clock)
        self.queues = QueueCache(cast(Any, self.tasks), self.clock, ttl=60)
        self.poller = TaskPoller(cast(Any, self.tasks), cast(Any, FakeIdentities()),
                                 self.status, cast(Any, self.events), self.queues,
                                 self.expiries, self.clock, settle=SETTLE, cap=600)

    def ref(self, name: str) -> ObjectRef:
        return ObjectRef("GcpTask", "gcptasks", "ns", name, f"uid-{name}")

    def watch(self, name: str, *, due_in: float = 0.0, ttl: int | None = None,
              relay: bool = False) -> ObservedTask:
        ref = self.ref(name)
        task = ObservedTask(f"{QUEUE}/tasks/{name}",
                            schedule_time=self.clock.now() + datetime.timedelta(seconds=due_in))
        self.tasks.tasks[task.name] = task
        self.kube.add(ref, {"taskName": task.name, "phase": "Queued"})
        self.poller.watch(Watched(ref, None, ("operator", QUEUE), task.name, relay=relay,
                                  ttl_seconds=ttl), observed=task)
        return task

    def status_of(self, name: str) -> dict[str, Any]:
        return dict(self.kube.objects[self.ref(name).path]["status"])

    async def at(self, seconds: float) -> float:
        self.clock.advance(seconds - (self.clock.monotonic() - 1000.0))
        return await self.poller.step() - 1000.0


async def test_a_queued_task_is_first_read_just_after_its_schedule_time() -> None:
    world = World()
    world.watch("later", due_in=30)
    assert await world.at(0) == pytest.approx(31.0)  # scheduleTime + settle
    assert world.tasks.calls == []


async def test_an_attempt_in_flight_is_followed_up_with_growing_delays() -> None:
    world = World()
    task = world.watch("busy", due_in=5)
    in_flight = ObservedAttempt(dispatch_time=world.clock.now() + datetime.timedelta(seconds=5))
    world.tasks.tasks[task.name] = ObservedTask(task.name, schedule_time=task.schedule_time,
                                                dispatch_count=1, last_attempt=in_flight)
    assert await world.at(6) == pytest.approx(7.0)  # changed: first follow-up, settle
    assert await world.at(7) == pytest.approx(9.0)  # then 2 s, 4 s...
    assert await world.at(9) == pytest.approx(13.0)
    assert world.tasks.calls == ["GetTask"] * 3
    assert world.status_of("busy")["phase"] == "Running"


async def test_a_vanished_direct_task_after_a_failed_attempt_is_unknown() -> None:
    """Even with the queue's attempts used up: Cloud Tasks deletes the task right after
    its last response, so the failure read may be an earlier attempt's (api.md)."""
    world = World()
    task = world.watch("doomed", due_in=1, ttl=60)
    world.tasks.queues[QUEUE] = ObservedQueue(QUEUE)
    failed = ObservedAttempt(dispatch_time=world.clock.now(), code=14)
    world.tasks.tasks[task.name] = ObservedTask(task.name, dispatch_count=1, last_attempt=failed)
    await world.at(2)
    del world.tasks.tasks[task.name]
    await world.at(3.5)
    status = world.status_of("doomed")
    assert status["phase"] == "Unknown"
    succeeded = find_condition(status["conditions"], "Succeeded")
    assert (succeeded["status"], succeeded["reason"]) == ("Unknown", "CompletedOutcomeUnknown")
    assert status["lastAttempt"]["code"] == 14  # the failure seen stays on record
    assert "GetQueue" not in world.tasks.calls  # the queue's limits decide nothing
    assert not world.poller.watching(world.ref("doomed"))
    assert world.expiries.tracked() == 1  # ttlSecondsAfterFinished from completionTime
    # completionTime is whole seconds (3 s here): the expiry is due 60 s after it
    assert await world.expiries.step() - 1000.0 == pytest.approx(63.0)
    world.clock.advance(60)
    await world.expiries.step()
    assert world.kube.deleted == ["doomed"]


async def test_many_due_tasks_of_one_queue_are_read_with_one_list() -> None:
    world = World()
    for i in range(12):
        world.watch(f"t{i}", due_in=10)
    await world.at(11)
    assert world.tasks.calls.count("ListTasks") == 1
    assert "GetTask" not in world.tasks.calls


async def test_the_poller_leaves_a_relay_tasks_outcome_to_the_relay() -> None:
    world = World()
    task = world.watch("relayed", due_in=1, relay=True)
    done = ObservedAttempt(dispatch_time=world.clock.now(), code=0)
    world.tasks.tasks[task.name] = ObservedTask(task.name, dispatch_count=1, response_count=1,
                                                last_attempt=done)
    await world.at(2)
    status = world.status_of("relayed")
    assert status["dispatchCount"] == 1
    assert status["phase"] == "Queued"  # unchanged: the relay writes the outcome
    assert "lastAttempt" not in status


async def test_forgotten_tasks_are_not_read_again() -> None:
    world = World()
    world.watch("gone", due_in=1)
    world.poller.forget(world.ref("gone").uid)
    assert await world.at(5) == float("inf") - 1000.0
    assert world.tasks.calls == []


async def test_a_missing_queue_is_waited_for_with_one_get_per_queue() -> None:
    world = World()
    waits = QueueWaits(cast(Any, world.tasks), cast(Any, FakeIdentities()), world.queues,
                       world.clock, first=1.0, cap=8.0)
    created: list[str] = []
    for name in ("a", "b", "c"):
        async def retry(n: str = name) -> None:
            created.append(n)

        waits.wait(f"uid-{name}", QUEUE, "ns", None, retry)
    times = []
    for _ in range(5):
        next_at = await waits.step()
        times.append(next_at - world.clock.monotonic())
        world.clock.mono = next_at
    assert world.tasks.calls == ["GetQueue"] * 4
    assert times == pytest.approx([1.0, 2.0, 4.0, 8.0, 8.0])  # doubling, capped
    world.tasks.queues[QUEUE] = ObservedQueue(QUEUE)
    await waits.step()
    assert sorted(created) == ["a", "b", "c"]
    assert waits.tracked() == 0


async def test_tasks_resumed_after_a_restart_list_are_read_from_it() -> None:
    """A restart resumes a queue's tasks over many seconds: one ListTasks for the queue,
    and the tasks resumed after it are read from that list, not from a list each."""
    world = World()
    names = [f"a{i}" for i in range(15)]
    names += [f"b{second}-{i}" for second in range(4, 30, 2) for i in range(12)]
    for name in names:  # the tasks were there before the restart
        task_name = f"{QUEUE}/tasks/{name}"
        world.tasks.tasks[task_name] = ObservedTask(
            task_name, schedule_time=world.clock.now() + datetime.timedelta(seconds=300))

    def resume(name: str) -> None:
        ref = world.ref(name)
        task_name = f"{QUEUE}/tasks/{name}"
        world.kube.add(ref, {"taskName": task_name, "phase": "Queued"})
        world.poller.watch(Watched(ref, None, ("operator", QUEUE), task_name), soon=True)

    for i in range(15):
        resume(f"a{i}")
    await world.at(3)
    assert world.tasks.calls == ["ListTasks"]
    for second in range(4, 30, 2):  # a trickle, 12 more each round
        for i in range(12):
            resume(f"b{second}-{i}")
        await world.at(second)
    resume("r-gone")
    await world.at(40)
    assert world.tasks.calls == ["ListTasks", "GetTask"]  # only the one the list lacks
    assert world.poller.tracked() == 15 + 13 * 12
    assert world.status_of("b28-11")["phase"] == "Queued"

