"""Kubernetes Events a human reads in `kubectl describe`: Created, Updated, DriftCorrected...

Why our own recorder rather than kopf's: events are also posted from the batched status
sync, which runs outside any kopf handler, and one way to post them keeps their wording
and their source (`gcpcall-operator`) the same everywhere. Messages are built by the
callers from spec fields and Google's error text, never from tokens or request bodies.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections import deque
from collections.abc import Sequence

import aiohttp

from gcpcall.kube import KubeClient, KubeError, ObjectRef
from gcpcall.observe.metrics import EVENTS_DROPPED
from gcpcall.ratelimit import TokenBucket

__all__ = ["EventRecorder"]

log = logging.getLogger(__name__)


class EventRecorder:
    """Posts core/v1 Events about our objects; a failure to post is logged, never raised.

    Posting runs in the background and is paced by a token bucket (`per_second`, bursts of
    `burst`), as client-go's recorder is: an event is for humans, and a thousand objects
    created at once would otherwise send a thousand event writes to the API server in the
    same second as their reconciles. A burst's events trail by seconds instead. At most
    `backlog` wait; beyond that the oldest are dropped (counted in
    `gcpcall_events_dropped_total` and logged). A post the API server could not take (it
    is restarting or unreachable: a 5xx, a 429, a connection error) is tried again after
    `retry_delays`, as client-go's recorder does, so that an outage does not leave objects
    without their `Created` event; an event still not posted then is dropped, counted and
    logged once.
    """

    def __init__(self, kube: KubeClient, component: str = "gcpcall-operator", *,
                 per_second: float = 25.0, burst: int = 100, backlog: int = 10_000,
                 retry_delays: Sequence[float] = (1.0, 2.0, 4.0, 8.0, 16.0)) -> None:
        self.kube = kube
        self._retry_delays = tuple(retry_delays)
        self.component = component
        self._bucket = TokenBucket(rate=per_second, burst=burst)
        self._waiting: deque[tuple[ObjectRef, str, str, str]] = deque()
        self._backlog = backlog
        self._ready = asyncio.Event()  # something waits to be posted
        self._idle = asyncio.Event()  # nothing waits and nothing is being posted
        self._idle.set()
        self._pending: set[asyncio.Task[None]] = set()
        self._pacer: asyncio.Task[None] | None = None

    def normal(self, ref: ObjectRef, reason: str, message: str) -> None:
        self._queue(ref, "Normal", reason, message)

    def warning(self, ref: ObjectRef, reason: str, message: str) -> None:
        self._queue(ref, "Warning", reason, message)

    def _queue(self, ref: ObjectRef, type_: str, reason: str, message: str) -> None:
        if len(self._waiting) >= self._backlog:
            dropped = self._waiting.popleft()
            EVENTS_DROPPED.inc()
            log.warning("event backlog full: dropped %s", dropped[2],
                        extra={"object": dropped[0]})
        self._waiting.append((ref, type_, reason, message))
        self._ready.set()
        self._idle.clear()
        if self._pacer is None or self._pacer.done():
            self._pacer = asyncio.get_running_loop().create_task(self._pace())

    async def _pace(self) -> None:
        while True:
            while not self._waiting:
                self._ready.clear()
                await self._ready.wait()
            await self._bucket.acquire()
            if not self._waiting:
                continue
            task = asyncio.get_running_loop().create_task(self._post(*self._waiting.popleft()))
            self._pending.add(task)
            task.add_done_callback(self._posted)

    def _posted(self, task: asyncio.Task[None]) -> None:
        self._pending.discard(task)
        if not self._pending and not self._waiting:
            self._idle.set()

    async def flush(self, within: float = 5.0) -> None:
        """At shutdown: post what waits, for at most `within` seconds, then stop."""
        try:
            async with asyncio.timeout(within):
                await self._idle.wait()
        except TimeoutError:
            pass
        if self._pacer is not None:
            self._pacer.cancel()
            await asyncio.gather(self._pacer, return_exceptions=True)
        if self._waiting:
            log.warning("shutting down with %d events not posted", len(self._waiting))
        if self._pending:
            # posts still in flight, or waiting out an outage: the process is stopping
            log.warning("shutting down with %d events being posted", len(self._pending))
            for task in self._pending:
                task.cancel()
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def _post(self, ref: ObjectRef, type_: str, reason: str, message: str) -> None:
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{ref.name}.", "namespace": ref.namespace},
            "involvedObject": {
                "apiVersion": ref.api_version,
                "kind": ref.kind,
                "name": ref.name,
                "namespace": ref.namespace,
                "uid": ref.uid,
            },
            "reason": reason,
            "message": message[:1024],
            "type": type_,
            "source": {"component": self.component},
            "reportingComponent": self.component,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        for delay in (*self._retry_delays, None):
            try:
                await self.kube.create_event(ref.namespace, body)
                return
            except (KubeError, OSError, aiohttp.ClientError) as e:
                if delay is not None and _transient(e):
                    await asyncio.sleep(delay)
                    continue
                EVENTS_DROPPED.inc()
                log.warning("could not post event %s: %s", reason, e, extra={"object": ref})
                return


def _transient(error: Exception) -> bool:
    """An API server that may take the post a little later (restarting, overloaded,
    unreachable), unlike one that refused the event itself."""
    if isinstance(error, KubeError):
        return error.status == 429 or error.status >= 500
    return True
