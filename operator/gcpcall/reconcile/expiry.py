"""Deleting finished GcpTasks after `ttlSecondsAfterFinished`, as Kubernetes does for Jobs.

Why a loop of its own: the expiry of a finished object is a timer, not a poll of Google,
and it must survive a missed moment (the API server down): a failed delete is retried.
The delete carries the object's uid, so a new object of the same name is never removed.
"""

from __future__ import annotations

import datetime
import heapq
import itertools
import logging

from gcpcall.clock import Clock
from gcpcall.kube import KubeClient, KubeError, ObjectRef
from gcpcall.observe.metrics import TRACKED
from gcpcall.reconcile.loop import BackgroundLoop

__all__ = ["Expiries"]

log = logging.getLogger(__name__)

_RETRY = 15.0


class Expiries(BackgroundLoop):
    """A heap of (when, object) to delete."""

    name = "expiries"

    def __init__(self, kube: KubeClient, clock: Clock) -> None:
        super().__init__(clock)
        self.kube = kube
        self._heap: list[tuple[float, int, ObjectRef]] = []
        self._due: dict[str, float] = {}  # uid -> when (the heap may hold stale entries)
        self._seq = itertools.count()

    def tracked(self) -> int:
        return len(self._due)

    def expire(self, ref: ObjectRef, at: datetime.datetime) -> None:
        """Delete the object at wall time `at`."""
        delay = (at - self.clock.now()).total_seconds()
        when = self.clock.monotonic() + max(0.0, delay)
        self._due[ref.uid] = when
        heapq.heappush(self._heap, (when, next(self._seq), ref))
        TRACKED.labels(self.name).set(len(self._due))
        self.wake()

    def forget(self, uid: str) -> None:
        self._due.pop(uid, None)
        TRACKED.labels(self.name).set(len(self._due))

    async def step(self) -> float:
        now = self.clock.monotonic()
        while self._heap and self._heap[0][0] <= now:
            when, _, ref = heapq.heappop(self._heap)
            if self._due.get(ref.uid) != when:
                continue  # forgotten, or rescheduled
            try:
                deleted = await self.kube.delete_object(ref)
            except (KubeError, OSError) as e:
                log.warning("TTL deletion failed: %s", e, extra={"object": ref})
                retry = now + _RETRY
                self._due[ref.uid] = retry
                heapq.heappush(self._heap, (retry, next(self._seq), ref))
                continue
            self.forget(ref.uid)
            if deleted:
                log.info("deleted: ttlSecondsAfterFinished passed", extra={"object": ref})
        return self._heap[0][0] if self._heap else float("inf")
