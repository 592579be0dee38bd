"""The two clocks the background loops and the relay read: wall time and monotonic time.

Why injectable: the sync, the poller and the operation follower decide when to look again
from both (a job's next run is a wall time, a backoff is a monotonic delay). Reading them
through one object lets a unit test move time instead of waiting for it, and keeps a test
from mixing a fake monotonic clock with the real wall clock.
"""

from __future__ import annotations

import datetime
import time
from typing import Protocol

__all__ = ["SYSTEM", "Clock", "SystemClock"]


class Clock(Protocol):
    def now(self) -> datetime.datetime:
        """Wall time, timezone-aware UTC."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""


class SystemClock:
    def now(self) -> datetime.datetime:
        return datetime.datetime.now(datetime.UTC)

    def monotonic(self) -> float:
        return time.monotonic()


SYSTEM: Clock = SystemClock()
