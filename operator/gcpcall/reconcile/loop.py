"""The base of every background loop: start, stop, wake, and survive its own errors.

Why one base: the job sync, the task poller, the queue waits, the TTL expiries and the
deletion runner each keep a registry and act when something falls due. Each used to carry
its own copy of the task handling, the wake-up event and the "log and carry on" rule, and
they drifted apart. A loop here only says what to do now and when it next has work
(`step`); a unit test calls `step` with a fake clock instead of running the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable

from gcpcall.clock import Clock

__all__ = ["BackgroundLoop", "bounded"]

log = logging.getLogger(__name__)

_ERROR_DELAY = 5.0  # seconds after a step failed unexpectedly
_LONGEST_NAP = 3600.0


class BackgroundLoop:
    """Runs `step()` whenever it is due or woken; a failed step is logged and retried."""

    name = "loop"

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def step(self) -> float:
        """Do what is due now; return the monotonic time of the next due work (inf: none)."""
        raise NotImplementedError

    def wake(self) -> None:
        """Something changed: run a step soon instead of sleeping until the next due time."""
        self._wakeup.set()

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"gcpcall-{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            # Cleared before the step: a wake-up during the step makes the next wait short.
            self._wakeup.clear()
            try:
                next_at = await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the %s loop failed; retrying in %.0f s", self.name, _ERROR_DELAY)
                next_at = self.clock.monotonic() + _ERROR_DELAY
            delay = next_at - self.clock.monotonic() if math.isfinite(next_at) else _LONGEST_NAP
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), min(delay, _LONGEST_NAP))


async def bounded(jobs: list[Awaitable[None]], limit: int = 32) -> None:
    """Await `jobs` with at most `limit` in flight (Google calls of one round, say)."""
    gate = asyncio.Semaphore(limit)

    async def run(job: Awaitable[None]) -> None:
        async with gate:
            await job

    await asyncio.gather(*(run(j) for j in jobs))
