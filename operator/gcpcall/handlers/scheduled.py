"""kopf handlers for ScheduledGcpCall: thin, each calls one reconcile function.

Why thin: everything worth testing lives in `reconcile/` and below, where it can run
without kopf; here we only translate kopf's callbacks and retries.
"""

from __future__ import annotations

from typing import Any

import kopf

from gcpcall.handlers.common import (
    GROUP,
    VERSION,
    deps_of,
    offer_deletion,
    raise_for,
)
from gcpcall.reconcile.scheduled import (
    ObjectView,
    delete_scheduled_call,
    reconcile_scheduled_call,
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


@kopf.on.event(GROUP, VERSION, PLURAL)
async def delete(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    offer_deletion(event, body, memo, KIND, PLURAL, delete_scheduled_call)
