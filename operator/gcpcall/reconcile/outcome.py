"""What a reconcile asks of its caller: done, or try again after a delay.

Why a value rather than raising kopf's errors here: the reconcile layer does not import
kopf (the handlers do), and the sync loop, which also reconciles, schedules its own retries.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol

from gcpcall.gcp.recovery import OUTAGE_CODES, Recovery

__all__ = ["Outcome", "backoff_delay"]


class _Classified(Protocol):
    @property
    def reason(self) -> str: ...
    @property
    def backoff(self) -> str: ...
    @property
    def code(self) -> str: ...


_MAX_BACKOFF = 300.0
_SLOW = 300.0  # IAM and identity problems are fixed outside the cluster
_DELETION = 10.0


@dataclass(frozen=True)
class Outcome:
    retry_after: float | None  # None: done
    reason: str = ""
    # The Google service that was down: the retry may come as soon as it answers again.
    waits_on: Recovery | None = None

    @classmethod
    def done(cls) -> Outcome:
        return cls(None)

    @classmethod
    def retry_slow(cls, reason: str) -> Outcome:
        return cls(_SLOW * (0.8 + 0.4 * random.random()), reason)  # noqa: S311 - jitter

    @classmethod
    def retry_deletion(cls, reason: str) -> Outcome:
        return cls(_DELETION, reason)

    @classmethod
    def retry(cls, c: _Classified, service: Recovery | None = None) -> Outcome:
        """`service`: the one the failed call went to; an outage of it is waited out on
        its recovery signal (gcp.recovery), not on this object's own backoff alone."""
        if c.backoff == "slow":
            return cls.retry_slow(c.reason)
        # fast: kopf's retry counter grows the delay (see handlers.common.raise_for)
        waits_on = service if service is not None and c.code in OUTAGE_CODES else None
        return cls(0.0, c.reason, waits_on)


def backoff_delay(attempt: int) -> float:
    """Exponential backoff for the n-th transient failure, with jitter, so that many
    objects failing together do not retry together."""
    return min(_MAX_BACKOFF, 2.0 ** min(attempt, 10)) * (0.5 + random.random())  # noqa: S311
