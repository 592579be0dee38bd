"""What every handler shares: the resource identifiers, the deps from memo, retry delays.

Why: handlers stay thin (parse the body, call one reconcile, turn its Outcome into kopf's
retry), and these few lines would otherwise be repeated in each of them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import kopf

from gcpcall.reconcile.deps import Deps
from gcpcall.reconcile.outcome import Outcome, backoff_delay
from gcpcall.reconcile.scheduled import ObjectView

__all__ = ["GROUP", "VERSION", "deleting", "deps_of", "offer_deletion", "raise_for"]

GROUP = "gcpcall.dev"
VERSION = "v1alpha1"


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
    delay = outcome.retry_after if outcome.retry_after > 0 else backoff_delay(retry)
    raise kopf.TemporaryError(outcome.reason or "retrying", delay=delay)


def deleting(meta: kopf.Meta, **_: Any) -> bool:
    """kopf's `when=` filter for the deletion event handlers."""
    return bool(meta.get("deletionTimestamp"))


Delete = Callable[[ObjectView, Deps], Awaitable[Outcome]]


def offer_deletion(
    event: Mapping[str, Any], view: ObjectView, deps: Deps, delete: Delete
) -> None:
    """Hand a deleting object to the deletion runner (or tell it the object is gone).

    Why not `@kopf.on.delete`: kopf's own finalizer would then be added in a patch of its
    own before the creation handler runs (see `reconcile.finalizer`).
    """
    if event.get("type") == "DELETED":
        deps.deletions.gone(view.ref.uid)
        return

    async def cleanup() -> Outcome:
        return await delete(view, deps)

    deps.deletions.offer(view.ref, view.finalizers, view.spec, cleanup)
