"""What the GcpTask side needs of Cloud Tasks queues: their state, and waiting for one.

Why apart from the poller: a queue's state (paused, its attempt limit) is read for many
tasks at once and cached briefly, with one GetQueue in flight per queue; and objects whose
queue does not exist yet wait here, with one GetQueue per queue on a growing interval,
instead of a retried CreateTask per object. Once the queue exists the waiting creates run.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from gcpcall.api.observed import ObservedQueue
from gcpcall.clock import Clock
from gcpcall.gcp.errors import classify
from gcpcall.gcp.identity import GoogleIdentity, IdentityResolver
from gcpcall.gcp.tasks import TasksAdapter
from gcpcall.observe.metrics import TRACKED
from gcpcall.reconcile.loop import BackgroundLoop, bounded

__all__ = ["QueueCache", "QueueWaits", "Retry"]

log = logging.getLogger(__name__)

Retry = Callable[[], Awaitable[object]]


class QueueCache:
    """A queue's state, trusted for `ttl` seconds; None when missing or unreadable."""

    def __init__(self, tasks: TasksAdapter, clock: Clock, ttl: float) -> None:
        self.tasks = tasks
        self.clock = clock
        self.ttl = ttl
        self._queues: dict[str, tuple[float, ObservedQueue | None]] = {}
        self._reads: dict[str, asyncio.Future[ObservedQueue | None]] = {}

    def put(self, queue: str, info: ObservedQueue | None) -> None:
        self._queues[queue] = (self.clock.monotonic(), info)

    async def get(self, queue: str, identity: GoogleIdentity) -> ObservedQueue | None:
        hit = self._queues.get(queue)
        if hit is not None and self.clock.monotonic() - hit[0] < self.ttl:
            return hit[1]
        pending = self._reads.get(queue)
        if pending is None:
            pending = asyncio.ensure_future(self._read(queue, identity))
            self._reads[queue] = pending
            pending.add_done_callback(lambda _: self._reads.pop(queue, None))
        return await asyncio.shield(pending)

    async def _read(self, queue: str, identity: GoogleIdentity) -> ObservedQueue | None:
        try:
            info = await self.tasks.get_queue(queue, identity)
        except Exception as exc:
            log.info("GetQueue %s failed: %s", queue, classify(exc).message)
            info = None
        self.put(queue, info)
        return info


@dataclass
class _Wait:
    namespace: str
    service_account: str | None
    waiters: dict[str, Retry] = field(default_factory=dict)  # uid -> retry the create
    check_at: float = 0.0
    rounds: int = 0


class QueueWaits(BackgroundLoop):
    """Objects waiting for their queue to exist, one GetQueue per queue deciding."""

    name = "queue-waits"

    def __init__(self, tasks: TasksAdapter, identities: IdentityResolver, cache: QueueCache,
                 clock: Clock, first: float, cap: float) -> None:
        super().__init__(clock)
        self.tasks = tasks
        self.identities = identities
        self.cache = cache
        self.first = first
        self.cap = cap
        self._waits: dict[str, _Wait] = {}

    def tracked(self) -> int:
        return sum(len(w.waiters) for w in self._waits.values())

    def _delay(self, rounds: int) -> float:
        return min(self.cap, self.first * 2.0 ** rounds)

    def wait(self, uid: str, queue: str, namespace: str, service_account: str | None,
             retry: Retry) -> None:
        wait = self._waits.get(queue)
        if wait is None:
            wait = _Wait(namespace, service_account,
                         check_at=self.clock.monotonic() + self._delay(0))
            self._waits[queue] = wait
        wait.waiters[uid] = retry
        TRACKED.labels(self.name).set(self.tracked())
        self.wake()

    def forget(self, uid: str) -> None:
        for wait in self._waits.values():
            wait.waiters.pop(uid, None)
        TRACKED.labels(self.name).set(self.tracked())

    async def step(self) -> float:
        now = self.clock.monotonic()
        for queue, wait in list(self._waits.items()):
            if not wait.waiters:
                del self._waits[queue]
                continue
            if wait.check_at > now:
                continue
            wait.rounds += 1
            try:
                identity = await self.identities.resolve(wait.namespace, wait.service_account)
                found = await self.tasks.get_queue(queue, identity)
            except Exception as exc:
                log.info("waiting for queue %s: %s", queue, classify(exc).message)
                found = None
            if found is None:
                wait.check_at = self.clock.monotonic() + self._delay(wait.rounds)
                continue
            del self._waits[queue]
            self.cache.put(queue, found)
            retries = list(wait.waiters.values())
            TRACKED.labels(self.name).set(self.tracked())
            log.info("queue %s exists now: creating %d waiting task(s)", queue, len(retries))
            await bounded([_run(r) for r in retries])
        return min((w.check_at for w in self._waits.values()), default=float("inf"))


async def _run(retry: Retry) -> None:
    try:
        await retry()
    except Exception:
        log.exception("creating a task after its queue appeared failed")
