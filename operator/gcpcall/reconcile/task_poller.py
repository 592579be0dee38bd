"""Follows unfinished GcpTasks in Cloud Tasks, and nothing else.

Why a poller of its own: Cloud Tasks pushes nothing back. In Direct delivery it deletes a
task after success or after its last failed attempt, and between attempts it keeps only
the first and last attempt. So the operator has to look, but only at tasks that can still
change, and only when a change is due: at the task's scheduleTime (which Cloud Tasks moves
to the next retry after a failed attempt), then with growing follow-ups while an attempt
is in flight or a due task waits (a paused queue). Finished tasks are dropped and cost
nothing. Tasks due together in one queue are read with one ListTasks (pages of 1,000)
instead of a GetTask each, when that is cheaper. After a restart the resumed tasks of a
queue trickle in over many seconds: the first list of the queue answers for the ones
resumed after it for a while (`_SHARE`), so a restart lists each queue once.

With Relay delivery the relay records each attempt and the outcome; the poller still reads
what Cloud Tasks reports (counts, times) and notices a task that Cloud Tasks finished
without the relay seeing a success, which the relay's outcome rule then calls Failed.
"""

from __future__ import annotations

import asyncio
import datetime
import heapq
import itertools
import logging
import math
import time
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from gcpcall.api.observed import ObservedTask, format_time, parse_time
from gcpcall.api.ownership import Owner, Part
from gcpcall.api.task_status import TERMINAL_PHASES, outcome_part, read_part
from gcpcall.clock import Clock
from gcpcall.gcp.errors import classify
from gcpcall.gcp.identity import GoogleIdentity, IdentityNotReady, IdentityResolver
from gcpcall.gcp.tasks import TasksAdapter
from gcpcall.kube import ObjectRef
from gcpcall.observe.events import EventRecorder
from gcpcall.observe.metrics import SYNC_DURATION, SYNC_LAST_LIST, SYNC_LISTS, TRACKED
from gcpcall.reconcile.expiry import Expiries
from gcpcall.reconcile.loop import BackgroundLoop, bounded
from gcpcall.reconcile.status_writer import StatusWriter
from gcpcall.reconcile.task_events import post_transitions
from gcpcall.reconcile.task_queues import QueueCache

__all__ = ["GroupKey", "TaskPoller", "Watched", "observe_parts"]

log = logging.getLogger(__name__)

GroupKey = tuple[Hashable, str]  # (identity key, queue name)

KIND = "GcpTask"
_LIST_MIN = 10  # due tasks of one queue that make a ListTasks page worth it
_PAGE = 1000
_RETRY_FAST = 15.0  # after a transient failure of a poll
_RETRY_SLOW = 300.0  # after IdentityNotReady / permission problems
_SLOT = 0.25  # seconds; poll times are rounded up to it
_SHARE = 120.0  # how long a restart's list of a queue answers for tasks resumed after it


@dataclass
class Watched:
    """An unfinished task the poller follows, and when it looks next."""

    ref: ObjectRef
    service_account: str | None
    group: GroupKey
    task_name: str
    relay: bool = False
    ttl_seconds: int | None = None  # ttlSecondsAfterFinished
    next_poll: float = 0.0
    follow_up: int = 0
    last_seen: tuple[int, str] | None = None  # (dispatchCount, lastAttempt) last observed
    version: int = 0
    resumed: bool = False  # after a restart, not read yet: a restart's list may answer


    @property
    def queue(self) -> str:
        return self.group[1]


@dataclass
class _Shared:
    """A restart's list of one queue, kept to answer for the tasks resumed after it. It is
    newer than anything the previous process wrote, so reading from it rolls nothing back."""

    tasks: dict[str, ObservedTask]
    until: float  # monotonic


def observe_parts(
    relay: bool, task: ObservedTask | None, *, now: Any, queue_paused: bool = False,
) -> list[Part | Callable[[Mapping[str, Any]], Part]]:
    """What one read of a task (None: it is gone) adds to the status: the poller's read
    fields and, in Direct delivery, the outcome; in Relay delivery the relay's outcome
    rule only once the task is gone (it may have ended without a success the relay saw)."""
    parts: list[Part | Callable[[Mapping[str, Any]], Part]] = [read_part(task)]
    exists = task is not None
    if relay:
        if not exists:
            parts.append(_relay_attempts)
            parts.append(lambda status: outcome_part(
                Owner.RELAY, status, now=now, created=True, exists=False))
        return parts
    parts.append(lambda status: outcome_part(
        Owner.POLLER, status, now=now, created=True, exists=exists,
        attempt=task.last_attempt if task is not None else None,
        queue_paused=queue_paused))
    return parts


def _relay_attempts(status: Mapping[str, Any]) -> Part:
    """A relayed task gone before a read saw its last dispatches: the relay's attempt
    number (Cloud Tasks' retry count + 1) is how many there were, at least."""
    seen = int((status.get("lastAttempt") or {}).get("attempt") or 0)
    if seen > int(status.get("dispatchCount") or 0):
        return Part(Owner.POLLER, {"dispatchCount": seen})
    return Part(Owner.POLLER)


class TaskPoller(BackgroundLoop):
    """The registry of unfinished tasks and the loop that reads them when due."""

    name = "poller"

    def __init__(
        self, tasks: TasksAdapter, identities: IdentityResolver, status: StatusWriter,
        events: EventRecorder, queues: QueueCache, expiries: Expiries, clock: Clock,
        settle: float, cap: float,
    ) -> None:
        super().__init__(clock)
        self.tasks = tasks
        self.identities = identities
        self.status = status
        self.events = events
        self.queues = queues
        self.expiries = expiries
        self.settle = max(0.2, settle)
        self.cap = max(self.settle, cap)
        self._watched: dict[str, Watched] = {}  # uid -> entry
        self._members: dict[GroupKey, set[str]] = {}  # group -> uids
        self._heap: list[tuple[float, int, str, int]] = []  # (at, seq, uid, version)
        self._seq = itertools.count()
        self._queue_sizes: dict[str, int] = {}  # live tasks seen at the last ListTasks
        self._shared: dict[GroupKey, _Shared] = {}  # restart lists, by group

    # registry ---------------------------------------------------------------------------
    def tracked(self) -> int:
        return len(self._watched)

    def watching(self, ref: ObjectRef) -> bool:
        return self.follows(ref.uid)

    def follows(self, uid: str) -> bool:
        return uid in self._watched

    def watch(self, w: Watched, observed: ObservedTask | None = None, soon: bool = False) -> None:
        """Follow `w`; the first look is timed from `observed` (or soon, after a restart)."""
        old = self._watched.get(w.ref.uid)
        if old is not None:
            w.version = old.version + 1
            self._members.get(old.group, set()).discard(w.ref.uid)
        self._watched[w.ref.uid] = w
        self._members.setdefault(w.group, set()).add(w.ref.uid)
        TRACKED.labels(self.name).set(len(self._watched))
        if observed is not None:
            w.last_seen = _signature(observed)
        if soon:
            # After a restart objects arrive one by one: a common slot a little ahead lets
            # the tasks of one queue be read together, with one ListTasks; those resumed
            # after it are read from that list (see `_shared`).
            w.resumed = True
            at = (math.floor(self.clock.monotonic() / self.settle) + 2) * self.settle
        elif observed is not None:
            at = self._next_after(w, observed, changed=True)
        else:
            at = self.clock.monotonic() + self.settle
        self._schedule(w, at)

    def forget(self, uid: str) -> None:
        w = self._watched.pop(uid, None)
        TRACKED.labels(self.name).set(len(self._watched))
        if w is not None:
            members = self._members.get(w.group)
            if members is not None:
                members.discard(uid)
                if not members:
                    del self._members[w.group]

    def finished(self, ref: ObjectRef, ttl_seconds: int | None,
                 status: Mapping[str, Any]) -> None:
        """A finished task: nothing more to read; only the TTL (if any) remains."""
        self.forget(ref.uid)
        completion = status.get("completionTime")
        if ttl_seconds is None or not completion:
            return
        done = parse_time(str(completion))
        self.expiries.expire(ref, done + datetime.timedelta(seconds=ttl_seconds))

    # timing -----------------------------------------------------------------------------
    def _schedule(self, w: Watched, at: float) -> None:
        # Slots of a quarter second: tasks due at nearly the same time share a round.
        at = math.ceil(at / _SLOT) * _SLOT
        w.next_poll = at
        w.version += 1
        heapq.heappush(self._heap, (at, next(self._seq), w.ref.uid, w.version))
        self.wake()

    def _follow_up(self, w: Watched) -> float:
        delay = min(self.cap, self.settle * 2.0 ** w.follow_up)
        w.follow_up += 1
        return self.clock.monotonic() + delay

    def _next_after(self, w: Watched, task: ObservedTask, changed: bool) -> float:
        """When to look again at a task that still exists."""
        if changed:
            w.follow_up = 0
        attempt = task.last_attempt
        in_flight = attempt is not None and attempt.code is None
        when = task.schedule_time
        now = self.clock.now()
        if not in_flight and when is not None and when > now:
            # queued, or waiting for its next retry: Cloud Tasks moved scheduleTime there
            return self.clock.monotonic() + (when - now).total_seconds() + self.settle
        return self._follow_up(w)

    def _current(self, entry: tuple[float, int, str, int]) -> bool:
        w = self._watched.get(entry[2])
        return w is not None and w.version == entry[3]

    # loop -------------------------------------------------------------------------------
    async def step(self) -> float:
        now = self.clock.monotonic()
        due: dict[GroupKey, list[Watched]] = {}
        while self._heap and self._heap[0][0] <= now:
            entry = heapq.heappop(self._heap)
            if self._current(entry):
                w = self._watched[entry[2]]
                due.setdefault(w.group, []).append(w)
        for key in [k for k, shared in self._shared.items() if shared.until <= now]:
            del self._shared[key]
        rounds: list[Awaitable[None]] = []
        for key, members in due.items():
            shared = self._shared.get(key)
            if shared is not None:
                late = [w for w in members if w.resumed]
                if late:
                    rounds.append(self._poll_shared(late, shared))
                    members = [w for w in members if not w.resumed]
                if not members:
                    continue
            batch_of, batch = self._plan(key, members, now, skip_resumed=shared is not None)
            rounds.append(self._poll_group(key, batch_of, batch))
            for w in batch_of:
                # a fallback in case this round fails; an observation reschedules it
                self._schedule(w, now + _RETRY_FAST)
        if rounds:
            await asyncio.gather(*rounds)
        while self._heap and not self._current(self._heap[0]):
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else float("inf")

    def _plan(self, key: GroupKey, due: list[Watched], now: float,
              skip_resumed: bool = False) -> tuple[list[Watched], bool]:
        """One ListTasks when enough members of the queue are due now or within the settle
        time (they are all read then), else a GetTask for each due one. Resumed members are
        left out while a restart's list answers for them."""
        soon = [w for uid in self._members.get(key, ())
                if (w := self._watched[uid]).next_poll <= now + self.settle
                and not (skip_resumed and w.resumed)]
        pages = max(1, math.ceil(self._queue_sizes.get(key[1], 0) / _PAGE))
        if len(soon) >= _LIST_MIN * pages:
            return soon, True
        return due, False

    async def _poll_group(self, key: GroupKey, members: list[Watched], batch: bool) -> None:
        started = self.clock.monotonic()
        queue = key[1]
        first = members[0]
        try:
            identity = await self.identities.resolve(first.ref.namespace, first.service_account)
            if batch:
                listed = await self.tasks.list_tasks(queue, identity)
                SYNC_LISTS.labels(KIND).inc()
                self._queue_sizes[queue] = len(listed)
                by_name = {t.name: t for t in listed}
                if any(w.resumed for w in members):  # each read below clears the mark
                    self._shared[key] = _Shared(by_name, self.clock.monotonic() + _SHARE)
                await bounded(
                    [self._observe(w, by_name.get(w.task_name), identity) for w in members]
                )
            else:
                await bounded([self._get_and_observe(w, identity) for w in members])
            SYNC_LAST_LIST.labels(KIND).set(time.time())
        except IdentityNotReady as e:
            log.info("polling queue %s waits for its identity: %s", queue, e)
            for w in members:
                self._schedule(w, self.clock.monotonic() + _RETRY_SLOW)
        except Exception as exc:  # ListTasks (or the identity) failed: try again later
            c = classify(exc)
            log.warning("reading tasks of %s failed: %s", queue, c.message)
            for w in members:
                self._schedule(w, self.clock.monotonic() + (
                    _RETRY_SLOW if c.backoff == "slow" else _RETRY_FAST))
        SYNC_DURATION.labels(KIND).observe(self.clock.monotonic() - started)

    async def _poll_shared(self, members: list[Watched], shared: _Shared) -> None:
        """Resumed tasks read from their queue's restart list. One absent from it is read
        with a GetTask: the list says it was gone, but a GetTask costs little and is sure."""
        first = members[0]
        try:
            identity = await self.identities.resolve(first.ref.namespace, first.service_account)
        except Exception as exc:  # the identity is not ready (or failed): read them later
            log.info("tasks of %s wait for their identity: %s", first.queue,
                     classify(exc).message)
            for w in members:
                self._schedule(w, self.clock.monotonic() + _RETRY_SLOW)
            return
        jobs: list[Awaitable[None]] = []
        for w in members:
            task = shared.tasks.get(w.task_name)
            self._schedule(w, self.clock.monotonic() + _RETRY_FAST)  # if the write fails
            if task is None:
                jobs.append(self._get_and_observe(w, identity))
            else:
                jobs.append(self._observe(w, task, identity))
        await bounded(jobs)

    async def _get_and_observe(self, w: Watched, identity: GoogleIdentity) -> None:
        try:
            task = await self.tasks.get_task(w.task_name, identity)
        except Exception as exc:
            c = classify(exc)
            log.warning("GetTask failed: %s", c.message,
                        extra={"object": w.ref, "google": w.task_name})
            self._schedule(w, self.clock.monotonic() + (
                _RETRY_SLOW if c.backoff == "slow" else _RETRY_FAST))
            return
        await self._observe(w, task, identity)

    async def _observe(
        self, w: Watched, task: ObservedTask | None, identity: GoogleIdentity
    ) -> None:
        """Bring one object's status up to date with what was read of its task."""
        if self._watched.get(w.ref.uid) is not w:
            return  # forgotten (deleted) or replaced while the read was out
        w.resumed = False  # read since the restart: a restart's list is older than this
        paused = False
        # The queue's state matters only to say "paused" for a due task that waits.
        overdue = (task is not None and task.dispatch_count == 0
                   and (task.schedule_time is None or task.schedule_time <= self.clock.now()))
        if not w.relay and overdue:
            queue = await self.queues.get(w.queue, identity)
            paused = bool(queue and queue.paused)
        try:
            written = await self.status.write(
                w.ref, w.relay, *observe_parts(w.relay, task, now=self.clock.now(),
                                               queue_paused=paused))
        except Exception as exc:  # the API server is unreachable or refused: later
            log.warning("status not written: %s", classify(exc).message,
                        extra={"object": w.ref})
            self._schedule(w, self.clock.monotonic() + _RETRY_FAST)
            return
        if self._watched.get(w.ref.uid) is not w:
            return  # the object is gone (the writer's 404 forgot it)
        post_transitions(self.events, w.ref, written)
        after = written.after if written is not None else self.status.known(w.ref)
        if after.get("phase") in TERMINAL_PHASES:
            self.finished(w.ref, w.ttl_seconds, after)
            return
        if task is None:
            # Gone, with an operation still running: the relay follows it, not Cloud Tasks.
            self.forget(w.ref.uid)
            return
        seen = _signature(task)
        changed = seen != w.last_seen
        w.last_seen = seen
        self._schedule(w, self._next_after(w, task, changed))


def _signature(task: ObservedTask) -> tuple[int, str]:
    attempt = task.last_attempt
    mark = ""
    if attempt is not None:
        mark = f"{format_time(attempt.dispatch_time)}/{attempt.code}"
    return task.dispatch_count, mark
