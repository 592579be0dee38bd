"""What every handler shares: the resource identifiers, the deps from memo, retry delays.

Why: handlers stay thin (parse the body, call one reconcile, turn its Outcome into kopf's
retry), and these few lines would otherwise be repeated in each of them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import kopf

from gcpcall.api.settled import settled
from gcpcall.gcp.errors import classify
from gcpcall.reconcile.deps import Deps
from gcpcall.reconcile.objects import ObjectView
from gcpcall.reconcile.outcome import Outcome, backoff_delay

__all__ = [
    "GROUP", "VERSION", "OperatorMemo", "deps_of", "on_each_event", "raise_for", "resume_needed",
    "settle",
]

GROUP = "gcpcall.dev"
VERSION = "v1alpha1"


class OperatorMemo(kopf.Memo):
    """kopf's memo, one for the whole operator: kopf gives every object a shallow copy of
    the memo it starts with (about 300 bytes each, 3 MB at 10,000 objects), and nothing of
    ours is per object (the deps, the follower and the relay are the operator's)."""

    def __copy__(self) -> OperatorMemo:
        return self


def deps_of(memo: Any) -> Deps:
    deps = memo.deps
    assert isinstance(deps, Deps)
    return deps


async def raise_for(outcome: Outcome, retry: int) -> None:
    """Done: return. Otherwise ask kopf to call again after the outcome's delay.

    A zero delay means "transient": exponential backoff on kopf's retry count, with jitter,
    so many objects failing together do not retry together. When the Google service was
    down, the delay is waited out here, on that service's recovery signal, so every waiting
    object retries as soon as it answers again (`gcp.recovery`).
    """
    if outcome.retry_after is None:
        return
    delay = outcome.retry_after if outcome.retry_after > 0 else backoff_delay(retry)
    if outcome.waits_on is not None and outcome.waits_on.down:
        await outcome.waits_on.wait(delay)
        delay = _AT_ONCE
    raise kopf.TemporaryError(outcome.reason or "retrying", delay=delay)


_AT_ONCE = 0.1


async def settle(obj: ObjectView, work: Awaitable[Outcome], retry: int) -> None:
    """Run one reconcile and turn its outcome into kopf's terms (`raise_for`).

    A reconcile reports its failures in status; when the API server cannot take that write
    either (it is restarting, shutting down, unreachable), the error is transient to our
    classifier: retried with our backoff, never left to kopf's 60-second default for
    unexpected errors, with a traceback. The classified message is the retry's reason, so
    the one line about it is kopf's "failed temporarily" (a WARNING, `observe.logs`), which
    names the object.
    """
    try:
        outcome = await work
    except Exception as exc:
        c = classify(exc)
        if not c.retryable or c.reason == "Unexpected":
            raise
        outcome = dataclasses.replace(Outcome.retry(c), reason=c.message)
    await raise_for(outcome, retry)


Delete = Callable[[ObjectView, Deps], Awaitable[Outcome]]
Resume = Callable[[ObjectView, Deps], Awaitable[bool]]


async def on_each_event(event: Mapping[str, Any], body: kopf.Body, memo: Any, kind: str,
                        plural: str, delete: Delete, resume: Resume) -> None:
    """Every watch event of an object: hand a deleting one to the deletion runner, forget
    one that is gone everywhere, offer pending long-running operations (restarts, a relay
    of its own) to the operation follower, and register a settled object that the initial
    listing brings (a restart) with the sync or the poller.

    Why not `@kopf.on.delete`: kopf's own finalizer would then be added in a patch of its
    own before the creation handler runs (see `reconcile.finalizer`).

    Why the restart here and not only in `@kopf.on.resume`: a kopf changing handler costs
    kopf about as much again as our resume itself (its progress records, its two log lines,
    its handler context), which made a restart of 10,000 objects cost twice plain kopf's
    CPU. The listing event already runs this handler; the resume handler is left for the
    objects this could not register (`resume_needed`), where kopf's retries are wanted.
    """
    deps = deps_of(memo)
    # The event's own parsed object, not kopf's `body` view of it: every read through the
    # view resolves a path, and a spec parse reads hundreds of fields (a restart: 10,000).
    raw: Mapping[str, Any] = event.get("object") or body
    if event.get("type") == "DELETED":
        view = ObjectView.from_body(raw, kind, plural)
        deps.forget(view.ref)
        for forget in getattr(memo, "forget", ()):
            forget(view.ref.uid)
        return
    deps.recent.seen(raw)
    follower = getattr(memo, "follower", None)
    if follower is not None and (raw.get("spec") or {}).get("delivery") == "Relay":
        await follower.offer(raw)
    if not (raw.get("metadata") or {}).get("deletionTimestamp"):
        if event.get("type") is None and settled(raw):  # listed at a (re)start
            await resume(ObjectView.from_body(raw, kind, plural), deps)
        return
    view = ObjectView.from_body(raw, kind, plural)

    async def cleanup() -> Outcome:
        return await delete(view, deps)

    deps.deletions.offer(view.ref, view.finalizers, view.spec, cleanup)


def resume_needed(registered: Callable[[Deps, kopf.Body], bool]) -> Callable[..., bool]:
    """The `when` of a kopf resume handler: only for a settled object the listing event
    did not register (`registered(deps, body)`); an unsettled one is kopf's create."""

    def when(body: kopf.Body, memo: Any, **_: Any) -> bool:
        return settled(body) and not registered(deps_of(memo), body)

    return when
