"""Follows unfinished GcpTasks in Cloud Tasks, and nothing else.

Why a poller of its own: Cloud Tasks pushes nothing back. In Direct delivery it deletes a
task after success or after its last failed attempt, and between attempts it keeps only
the first and last attempt. So the operator has to look, but only at tasks that can still
change, and only when a change is due: at the task's scheduleTime (which Cloud Tasks moves
to the next retry after a failed attempt), then with growing follow-ups while an attempt
is in flight or a due task waits (a paused queue). Finished tasks are dropped and cost
nothing. Tasks due together in one queue are read with one ListTasks (pages of 1,000)
instead of a GetTask each, when that is cheaper.

It also owns two small timers the GcpTask lifecycle needs: waiting for a missing queue to
appear (one GetQueue per queue, then the waiting objects are created), and deleting
finished objects after `ttlSecondsAfterFinished`, like a Job.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import heapq
import itertools
import logging
import math
import time
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gcpcall.api.observed import ObservedQueue, ObservedTask, format_time, rpc_code_name
from gcpcall.api.task_status import TERMINAL_PHASES, desired_task_status
from gcpcall.gcp.errors import classify
from gcpcall.gcp.identity import GoogleIdentity, IdentityNotReady
from gcpcall.gcp.tasks import TasksAdapter
from gcpcall.kube import KubeError, ObjectRef
from gcpcall.observe.metrics import SYNC_DURATION, SYNC_LISTS

if TYPE_CHECKING:
    from gcpcall.reconcile.deps import Deps

__all__ = ["TaskPoller", "Watched", "report"]

log = logging.getLogger(__name__)

GroupKey = tuple[Hashable, str]  # (identity key, queue name)
Retry = Callable[[], Awaitable[object]]

KIND = "GcpTask"
_LIST_MIN = 10  # due tasks of one queue that make a ListTasks page worth it
_PAGE = 1000
_CONCURRENCY = 32  # GetTask calls in flight per poll round
_RETRY_FAST = 15.0  # after a transient failure of a poll
_RETRY_SLOW = 300.0  # after IdentityNotReady / permission problems
_QUEUE_TTL_CAP = 60.0  # how long a queue's state (paused, max attempts) is trusted
_SLOT = 0.25  # seconds; poll times are rounded up to it


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass
class Watched:
    """An unfinished task the poller follows, and when it looks next."""

    ref: ObjectRef
    namespace: str
    service_account: str | None
    group: GroupKey
    task_name: str
    seed: Mapping[str, Any]  # the object's status when it was handed over
    ttl_seconds: int | None = None  # ttlSecondsAfterFinished
    next_poll: float = 0.0
    follow_up: int = 0
    last_seen: tuple[int, str] | None = None  # (dispatchCount, lastAttempt) last observed
    version: int = 0

    @property
    def queue(self) -> str:
        return self.group[1]


@dataclass
class _QueueWait:
    queue: str
    namespace: str
    service_account: str | None
    waiters: dict[str, Retry] = field(default_factory=dict)  # uid -> retry the create
    check_at: float = 0.0


def _attempt_text(attempt: Mapping[str, Any]) -> str:
    code = attempt.get("code")
    text = f"attempt at {attempt.get('attemptTime')}"
    if code is None:
        return text
    http = attempt.get("httpStatus")
    text += ": " + (f"HTTP {http} " if http is not None else "") + rpc_code_name(int(code))
    detail = attempt.get("message")
    return text + (f" ({detail})" if detail else "")


def transitions(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """Events for what changed between two statuses: (type, reason, message)."""
    out: list[tuple[str, str, str]] = []
    dispatched = int(after.get("dispatchCount") or 0)
    if dispatched and not int(before.get("dispatchCount") or 0):
        out.append(("Normal", "Dispatched", f"Cloud Tasks dispatched the task "
                                            f"(first attempt at {after.get('firstAttemptTime')})"))
    attempt = after.get("lastAttempt") or {}
    if attempt and attempt != (before.get("lastAttempt") or {}) and attempt.get("code") not in (
        None, 0
    ):
        out.append(("Warning", "AttemptFailed", _attempt_text(attempt)))
    phase = after.get("phase")
    if phase != before.get("phase") and phase in TERMINAL_PHASES:
        message = next((str(c.get("message") or "") for c in after.get("conditions") or ()
                        if c.get("type") == "Succeeded"), "")
        if phase == "Succeeded":
            out.append(("Normal", "Succeeded", message or "the call succeeded"))
        elif phase == "Failed":
            out.append(("Warning", "Failed", message or "the call failed"))
        else:
            out.append(("Normal", "Finished", message or "the task finished"))
    return out


async def report(
    deps: Deps, ref: ObjectRef, current: Mapping[str, Any], desired: Mapping[str, Any]
) -> bool:
    """Write the status if it changed, and post an event per transition; True if written."""
    written = await deps.status.write(ref, current, desired)
    if written:
        for type_, reason, message in transitions(current, desired):
            if type_ == "Warning":
                deps.events.warning(ref, reason, message)
            else:
                deps.events.normal(ref, reason, message)
    return written


class TaskPoller:
    """The registry of unfinished tasks, queue waits and TTL expiries, and their loop."""

    def __init__(
        self,
        deps: Deps,
        tasks: TasksAdapter,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.deps = deps
        self.tasks = tasks
        self.clock = clock
        self.settle = max(0.2, deps.settings.run_settle_seconds)
        self.cap = max(self.settle, deps.settings.drift_check_seconds)
        self._watched: dict[str, Watched] = {}  # uid -> entry
        self._members: dict[GroupKey, set[str]] = {}  # group -> uids
        self._heap: list[tuple[float, int, str, int]] = []  # (at, seq, uid, version)
        self._seq = itertools.count()
        self._queues: dict[str, tuple[float, ObservedQueue | None]] = {}
        self._queue_reads: dict[str, asyncio.Future[ObservedQueue | None]] = {}
        self._queue_sizes: dict[str, int] = {}  # live tasks seen at the last ListTasks
        self._waits: dict[str, _QueueWait] = {}
        self._wait_rounds: dict[str, int] = {}  # queue -> checks made (backoff)
        self._expiries: list[tuple[float, int, ObjectRef]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # registry ---------------------------------------------------------------------------
    def watching(self, ref: ObjectRef) -> bool:
        return ref.uid in self._watched

    def watch(self, w: Watched, observed: ObservedTask | None = None, soon: bool = False) -> None:
        """Follow `w`; the first look is timed from `observed` (or soon, after a restart)."""
        old = self._watched.get(w.ref.uid)
        if old is not None:
            w.version = old.version + 1
            self._members.get(old.group, set()).discard(w.ref.uid)
        self._watched[w.ref.uid] = w
        self._members.setdefault(w.group, set()).add(w.ref.uid)
        self._wait_rounds.pop(w.queue, None)
        if observed is not None:
            w.last_seen = _signature(observed)
        if soon:
            # After a restart objects arrive one by one: a common slot a little ahead lets
            # the tasks of one queue be read together, with one ListTasks.
            at = (math.floor(self.clock() / self.settle) + 2) * self.settle
        elif observed is not None:
            at = self._next_after(w, observed, changed=True)
        else:
            at = self.clock() + self.settle
        self._schedule(w, at)

    def forget(self, ref: ObjectRef) -> None:
        self._unwatch(ref.uid)
        for wait in self._waits.values():
            wait.waiters.pop(ref.uid, None)

    def wait_for_queue(
        self, ref: ObjectRef, queue: str, namespace: str, service_account: str | None,
        retry: Retry,
    ) -> None:
        """Retry `retry` (the create) once `queue` exists; one GetQueue per queue decides."""
        self._unwatch(ref.uid)
        wait = self._waits.get(queue)
        if wait is None:
            rounds = self._wait_rounds.get(queue, 0)
            wait = _QueueWait(queue, namespace, service_account,
                              check_at=self.clock() + self._wait_delay(rounds))
            self._waits[queue] = wait
        wait.waiters[ref.uid] = retry
        self._wakeup.set()

    def _unwatch(self, uid: str) -> None:
        w = self._watched.pop(uid, None)
        if w is not None:
            members = self._members.get(w.group)
            if members is not None:
                members.discard(uid)
                if not members:
                    del self._members[w.group]

    def expire(self, ref: ObjectRef, at: datetime.datetime) -> None:
        """Delete the object at `at` (ttlSecondsAfterFinished)."""
        delay = (at - _utcnow()).total_seconds()
        heapq.heappush(self._expiries, (self.clock() + max(0.0, delay), next(self._seq), ref))
        self._wakeup.set()

    async def queue_info(self, queue: str, identity: GoogleIdentity) -> ObservedQueue | None:
        """The queue's state, cached briefly; None when unknown (missing or unreadable).

        One GetQueue in flight per queue: a burst of creates in one queue shares it.
        """
        ttl = min(_QUEUE_TTL_CAP, self.cap)
        hit = self._queues.get(queue)
        if hit is not None and self.clock() - hit[0] < ttl:
            return hit[1]
        pending = self._queue_reads.get(queue)
        if pending is None:
            pending = asyncio.ensure_future(self._read_queue(queue, identity))
            self._queue_reads[queue] = pending
            pending.add_done_callback(lambda _: self._queue_reads.pop(queue, None))
        return await asyncio.shield(pending)

    async def _read_queue(self, queue: str, identity: GoogleIdentity) -> ObservedQueue | None:
        try:
            info = await self.tasks.get_queue(queue, identity)
        except Exception as exc:
            log.info("GetQueue %s failed: %s", queue, classify(exc).message)
            info = None
        self._queues[queue] = (self.clock(), info)
        return info

    # timing -----------------------------------------------------------------------------
    def _schedule(self, w: Watched, at: float) -> None:
        # Slots of a quarter second: tasks due at nearly the same time share a round.
        at = math.ceil(at / _SLOT) * _SLOT
        w.next_poll = at
        w.version += 1
        heapq.heappush(self._heap, (at, next(self._seq), w.ref.uid, w.version))
        self._wakeup.set()

    def _follow_up(self, w: Watched) -> float:
        delay = min(self.cap, self.settle * 2.0 ** w.follow_up)
        w.follow_up += 1
        return self.clock() + delay

    def _next_after(self, w: Watched, task: ObservedTask, changed: bool) -> float:
        """When to look again at a task that still exists."""
        if changed:
            w.follow_up = 0
        attempt = task.last_attempt
        in_flight = attempt is not None and attempt.code is None
        when = task.schedule_time
        if not in_flight and when is not None and when > _utcnow():
            # queued, or waiting for its next retry: Cloud Tasks moved scheduleTime there
            return self.clock() + (when - _utcnow()).total_seconds() + self.settle
        return self._follow_up(w)

    def _wait_delay(self, rounds: int) -> float:
        return min(self.cap, self.settle * 2.0 ** rounds)

    # loop -------------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gcpcall-task-poller")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                await self._round()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("GcpTask poll round failed")
                await asyncio.sleep(1.0)
            self._wakeup.clear()
            delay = self._next_wake() - self.clock()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), timeout=delay)

    def _next_wake(self) -> float:
        candidates = [self.clock() + 3600.0]
        while self._heap and not self._current(self._heap[0]):
            heapq.heappop(self._heap)
        if self._heap:
            candidates.append(self._heap[0][0])
        if self._expiries:
            candidates.append(self._expiries[0][0])
        candidates.extend(w.check_at for w in self._waits.values())
        return min(candidates)

    def _current(self, entry: tuple[float, int, str, int]) -> bool:
        w = self._watched.get(entry[2])
        return w is not None and w.version == entry[3]

    async def _round(self) -> None:
        now = self.clock()
        due: dict[GroupKey, list[Watched]] = {}
        while self._heap and self._heap[0][0] <= now:
            entry = heapq.heappop(self._heap)
            if self._current(entry):
                w = self._watched[entry[2]]
                due.setdefault(w.group, []).append(w)
        plans = [(key, *self._plan(key, members, now)) for key, members in due.items()]
        for _, members, _ in plans:
            for w in members:
                # a fallback in case this round fails; an observation reschedules it
                self._schedule(w, now + _RETRY_FAST)
        if plans:
            await asyncio.gather(*(self._poll_group(key, members, batch)
                                   for key, members, batch in plans))
        await self._expire_due(now)
        await self._check_queues(now)

    def _plan(self, key: GroupKey, due: list[Watched], now: float) -> tuple[list[Watched], bool]:
        """One ListTasks when enough members of the queue are due now or within the settle
        time (they are all read then), else a GetTask for each due one."""
        soon = [self._watched[uid] for uid in self._members.get(key, ())
                if self._watched[uid].next_poll <= now + self.settle]
        pages = max(1, math.ceil(self._queue_sizes.get(key[1], 0) / _PAGE))
        if len(soon) >= _LIST_MIN * pages:
            return soon, True
        return due, False

    async def _poll_group(self, key: GroupKey, members: list[Watched], batch: bool) -> None:
        started = self.clock()
        queue = key[1]
        first = members[0]
        try:
            identity = await self.deps.identities.resolve(first.namespace, first.service_account)
            if batch:
                listed = await self.tasks.list_tasks(queue, identity)
                SYNC_LISTS.labels(KIND).inc()
                self._queue_sizes[queue] = len(listed)
                by_name = {t.name: t for t in listed}
                await self._bounded(
                    [self._observe(w, by_name.get(w.task_name), identity) for w in members]
                )
            else:
                await self._bounded([self._get_and_observe(w, identity) for w in members])
        except IdentityNotReady as e:
            log.info("polling queue %s waits for its identity: %s", queue, e)
            for w in members:
                self._schedule(w, self.clock() + _RETRY_SLOW)
        except Exception as exc:  # ListTasks (or the identity) failed: try again later
            c = classify(exc)
            log.warning("reading tasks of %s failed: %s", queue, c.message)
            for w in members:
                self._schedule(w, self.clock() + (
                    _RETRY_SLOW if c.backoff == "slow" else _RETRY_FAST))
        SYNC_DURATION.labels(KIND).observe(self.clock() - started)

    async def _bounded(self, jobs: list[Awaitable[None]]) -> None:
        gate = asyncio.Semaphore(_CONCURRENCY)

        async def run(job: Awaitable[None]) -> None:
            async with gate:
                await job

        await asyncio.gather(*(run(j) for j in jobs))

    async def _get_and_observe(self, w: Watched, identity: GoogleIdentity) -> None:
        try:
            task = await self.tasks.get_task(w.task_name, identity)
        except Exception as exc:
            c = classify(exc)
            log.warning("GetTask %s failed: %s", w.task_name, c.message)
            self._schedule(w, self.clock() + (_RETRY_SLOW if c.backoff == "slow" else _RETRY_FAST))
            return
        await self._observe(w, task, identity)

    async def _observe(
        self, w: Watched, task: ObservedTask | None, identity: GoogleIdentity
    ) -> None:
        """Bring one object's status up to date with what was read of its task."""
        if self._watched.get(w.ref.uid) is not w:
            return  # forgotten (deleted) or replaced while the read was out
        current = self.deps.status.known(w.ref, w.seed)
        queue: ObservedQueue | None = None
        # The queue's state matters only to say "paused" for a due task that waits, and
        # to tell a last failed attempt (Failed) from one with attempts left (Unknown).
        overdue = (task is not None and task.dispatch_count == 0
                   and (task.schedule_time is None or task.schedule_time <= _utcnow()))
        gone_after_attempts = task is None and int(current.get("dispatchCount") or 0) > 0
        if overdue or gone_after_attempts:
            queue = await self.queue_info(w.queue, identity)
        desired = desired_task_status(
            current, now=_utcnow(), created=True, exists=task is not None, task=task,
            max_attempts=queue.max_attempts if queue else None,
            queue_paused=bool(queue and queue.paused),
        )
        try:
            await report(self.deps, w.ref, current, desired)
        except KubeError as e:
            if e.status in (404, 409):  # the object is gone (or was recreated)
                self.forget(w.ref)
                return
            log.warning("status of %s/%s not written: %s", w.ref.namespace, w.ref.name, e)
            self._schedule(w, self.clock() + _RETRY_FAST)
            return
        except (OSError, TimeoutError) as e:  # the API server is unreachable: later
            log.warning("status of %s/%s not written: %s", w.ref.namespace, w.ref.name, e)
            self._schedule(w, self.clock() + _RETRY_FAST)
            return
        if desired.get("phase") in TERMINAL_PHASES:
            self.forget(w.ref)
            self.finished(w.ref, w.ttl_seconds, desired)
            return
        if task is None:
            # Gone, with an operation still running: the relay follows it, not Cloud Tasks.
            self.forget(w.ref)
            return
        seen = _signature(task)
        changed = seen != w.last_seen
        w.last_seen = seen
        self._schedule(w, self._next_after(w, task, changed))

    def finished(self, ref: ObjectRef, ttl_seconds: int | None,
                 status: Mapping[str, Any]) -> None:
        """A finished task: nothing more to read; only the TTL (if any) remains."""
        completion = status.get("completionTime")
        if ttl_seconds is None or not completion:
            return
        done = datetime.datetime.fromisoformat(str(completion).replace("Z", "+00:00"))
        self.expire(ref, done + datetime.timedelta(seconds=ttl_seconds))

    async def _expire_due(self, now: float) -> None:
        while self._expiries and self._expiries[0][0] <= now:
            _, _, ref = heapq.heappop(self._expiries)
            try:
                # the uid precondition spares a recreated object of the same name
                await self.deps.kube.request(
                    "DELETE", ref.path,
                    body={"kind": "DeleteOptions", "apiVersion": "v1",
                          "preconditions": {"uid": ref.uid}},
                )
            except KubeError as e:
                if e.status not in (404, 409):
                    log.warning("TTL deletion of %s/%s failed: %s", ref.namespace, ref.name, e)
                    heapq.heappush(self._expiries, (now + _RETRY_FAST, next(self._seq), ref))
                continue
            except OSError as e:
                log.warning("TTL deletion of %s/%s failed: %s", ref.namespace, ref.name, e)
                heapq.heappush(self._expiries, (now + _RETRY_FAST, next(self._seq), ref))
                continue
            log.info("deleted %s/%s: ttlSecondsAfterFinished passed", ref.namespace, ref.name)

    async def _check_queues(self, now: float) -> None:
        for queue, wait in list(self._waits.items()):
            if wait.check_at > now:
                continue
            if not wait.waiters:
                del self._waits[queue]
                continue
            rounds = self._wait_rounds.get(queue, 0) + 1
            self._wait_rounds[queue] = rounds
            try:
                identity = await self.deps.identities.resolve(wait.namespace,
                                                              wait.service_account)
                found = await self.tasks.get_queue(queue, identity)
            except Exception as exc:
                log.info("waiting for queue %s: %s", queue, classify(exc).message)
                found = None
            if found is None:
                wait.check_at = self.clock() + self._wait_delay(rounds)
                continue
            del self._waits[queue]
            self._queues[queue] = (self.clock(), found)
            retries = list(wait.waiters.values())
            log.info("queue %s exists now: creating %d waiting task(s)", queue, len(retries))
            await self._bounded([_run_retry(r) for r in retries])


async def _run_retry(retry: Retry) -> None:
    try:
        await retry()
    except Exception:
        log.exception("creating a task after its queue appeared failed")


def _signature(task: ObservedTask) -> tuple[int, str]:
    attempt = task.last_attempt
    mark = ""
    if attempt is not None:
        mark = f"{format_time(attempt.dispatch_time)}/{attempt.code}"
    return task.dispatch_count, mark
