"""What every handler shares: the resource identifiers, the deps from memo, retry delays.

Why: handlers stay thin (parse the body, call one reconcile, turn its Outcome into kopf's
retry), and these few lines would otherwise be repeated in each of them.
"""

from __future__ import annotations

import random
from typing import Any

import kopf

from gcpcall.reconcile.deps import Deps
from gcpcall.reconcile.outcome import Outcome

__all__ = ["GROUP", "VERSION", "deps_of", "raise_for"]

GROUP = "gcpcall.dev"
VERSION = "v1alpha1"

_MAX_DELAY = 300.0


def deps_of(memo: Any) -> Deps:
    deps = memo.deps
    assert isinstance(deps, Deps)
    return deps


def raise_for(outcome: Outcome, retry: int) -> None:
    """Done: return. Otherwise ask kopf to call again after the outcome's delay.

    A zero delay means "transient": exponential backoff on kopf's retry count, with jitter,
    so many objects failing together do not retry together.
    """
    if outcome.retry_after is None:
        return
    delay = outcome.retry_after
    if delay <= 0:
        delay = min(_MAX_DELAY, 2.0 ** min(retry, 10)) * (0.5 + random.random())  # noqa: S311
    raise kopf.TemporaryError(outcome.reason or "retrying", delay=delay)
