"""Token buckets: Google's per-project quotas, and the pace of anything else we send.

Why: Cloud Scheduler allows 500 writes and 1,250 reads a minute per project; a create storm
of 1,000 objects or a restart would otherwise hit RESOURCE_EXHAUSTED and turn into a retry
storm. A token bucket per (project, kind of call) spreads the calls out instead. Events and
relay polls are paced by the same bucket, so it sits below every layer that uses it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["QuotaLimiter", "TokenBucket"]


@dataclass
class TokenBucket:
    """`rate` tokens a second, bursts up to `burst`."""

    rate: float
    burst: float
    clock: Callable[[], float] = time.monotonic
    _tokens: float = field(init=False)
    _stamp: float = field(init=False)
    _lock: asyncio.Lock = field(init=False, default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        self._tokens = self.burst
        self._stamp = self.clock()

    def _refill(self) -> None:
        now = self.clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    async def acquire(self) -> None:
        async with self._lock:
            self._refill()
            if self._tokens < 1:
                await asyncio.sleep((1 - self._tokens) / self.rate)
                self._refill()
            self._tokens -= 1


class QuotaLimiter:
    """Buckets per (project, kind); kinds and their per-minute limits are given once."""

    def __init__(self, per_minute: dict[str, float]) -> None:
        self._per_minute = per_minute
        self._buckets: dict[tuple[str, str], TokenBucket] = {}

    async def acquire(self, project: str, kind: str) -> None:
        key = (project, kind)
        bucket = self._buckets.get(key)
        if bucket is None:
            limit = self._per_minute[kind]
            # a burst of a tenth of the minute's quota keeps small changes instant
            bucket = TokenBucket(rate=limit / 60.0, burst=max(1.0, limit / 10.0))
            self._buckets[key] = bucket
        await bucket.acquire()
