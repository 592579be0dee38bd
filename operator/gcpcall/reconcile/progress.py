"""Saying that a Google write is under way, only when it is slow enough to be seen.

Why: api.md's Ready reasons `Creating`, `Updating` and `Deleting` tell a user (and Argo CD's
health check) that the operator is at work, not stuck. Writing them before every create
would double the status writes of a create storm for a state that lasts a few
milliseconds; so the reconcile writes them only when its Google write has not finished
after `SLOW_WRITE_SECONDS` (a quota wait, a slow or retrying Google), and a deletion whose
delete failed with a transient error says `Deleting` (retrying) rather than
`DeletionBlocked` (which needs a person).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from gcpcall.api.status import ReadyReason
from gcpcall.gcp.errors import classify
from gcpcall.gcp.identity import IdentityNotReady

__all__ = ["SLOW_WRITE_SECONDS", "deletion_failure", "reporting_if_slow"]

T = TypeVar("T")

log = logging.getLogger(__name__)

SLOW_WRITE_SECONDS = 5.0


async def reporting_if_slow(
    write: Awaitable[T], report: Callable[[], Awaitable[object]],
    after: float = SLOW_WRITE_SECONDS,
) -> T:
    """`write`'s result; when it takes longer than `after` seconds, `report()` runs
    meanwhile (once). A failed report never fails the write; cancelling the caller cancels
    the write."""
    task = asyncio.ensure_future(write)
    try:
        done, _ = await asyncio.wait({task}, timeout=after)
        if not done:
            try:
                await report()
            except Exception as exc:  # progress is a courtesy: the write goes on
                log.debug("progress not reported: %s", classify(exc).message)
        return await task
    finally:
        if not task.done():
            task.cancel()


def deletion_failure(exc: Exception) -> tuple[ReadyReason, str]:
    """The Ready reason and message of a delete that failed: `Deleting` while retrying
    alone can fix it (Google unavailable, a quota: the classifier's GcpError),
    `DeletionBlocked` when a person must act (permission, identity, a refusal)."""
    if isinstance(exc, IdentityNotReady):
        return ReadyReason.DELETION_BLOCKED, str(exc)
    c = classify(exc)
    transient = c.retryable and c.reason == ReadyReason.GCP_ERROR.value
    return (ReadyReason.DELETING if transient else ReadyReason.DELETION_BLOCKED), c.message
