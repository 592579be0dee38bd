"""kopf handlers for ScheduledGcpCall: thin, each calls one reconcile function.

Why thin: everything worth testing lives in `reconcile/` and below, where it can run
without kopf; here we only translate kopf's callbacks and retries.
"""

from __future__ import annotations

from typing import Any

import kopf

from gcpcall.handlers.common import GROUP, VERSION, deps_of, raise_for
from gcpcall.reconcile.scheduled import (
    ObjectView,
    delete_scheduled_call,
    reconcile_scheduled_call,
    release_if_abandoned,
    resume_scheduled_call,
)

__all__: list[str] = []

KIND, PLURAL = "ScheduledGcpCall", "scheduledgcpcalls"


def _view(body: kopf.Body) -> ObjectView:
    return ObjectView.from_body(body, KIND, PLURAL)


@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
async def reconcile(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
    raise_for(await reconcile_scheduled_call(_view(body), deps_of(memo)), retry)


@kopf.on.resume(GROUP, VERSION, PLURAL)
async def resume(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
    raise_for(await resume_scheduled_call(_view(body), deps_of(memo)), retry)


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def delete(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
    raise_for(await delete_scheduled_call(_view(body), deps_of(memo)), retry)


def _deleting(meta: kopf.Meta, **_: Any) -> bool:
    return bool(meta.get("deletionTimestamp"))


@kopf.on.event(GROUP, VERSION, PLURAL, when=_deleting)
async def release(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    # Switching deletionPolicy to Abandon on an object whose deletion is blocked releases it
    # at once, without waiting for the blocked delete's next retry.
    finalizers = list((body.get("metadata") or {}).get("finalizers") or [])
    await release_if_abandoned(_view(body), finalizers, deps_of(memo))
