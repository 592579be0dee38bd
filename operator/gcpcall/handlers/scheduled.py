"""kopf handlers for ScheduledGcpCall: thin, each calls one reconcile function.

Why thin: everything worth testing lives in `reconcile/` and below, where it can run
without kopf; here we only translate kopf's callbacks and retries. The names are what
kopf's log says ("Handler 'apply_spec' succeeded"), so they say what happens.
"""

from __future__ import annotations

from typing import Any

import kopf

from gcpcall.handlers import common
from gcpcall.handlers.common import GROUP, VERSION, deps_of, on_each_event, settle
from gcpcall.reconcile.deps import Deps
from gcpcall.reconcile.objects import ObjectView
from gcpcall.reconcile.scheduled import (
    KIND,
    PLURAL,
    delete_scheduled_call,
    reconcile_scheduled_call,
    resume_scheduled_call,
    track_in_sync,
)

__all__: list[str] = []


def _view(body: kopf.Body) -> ObjectView:
    return ObjectView.from_body(body, KIND, PLURAL)


@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
async def apply_spec_to_job(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
    obj = _view(body)
    await settle(obj, reconcile_scheduled_call(obj, deps_of(memo)), retry)


def _tracked(deps: Deps, body: kopf.Body) -> bool:
    return deps.sync.tracking(str(body.metadata.uid or ""))


# The listing event registers the objects in sync (`watch_events`); this is for the rest.
@kopf.on.resume(GROUP, VERSION, PLURAL, when=common.resume_needed(_tracked))
async def resume_job_sync(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
    obj = _view(body)
    await settle(obj, resume_scheduled_call(obj, deps_of(memo)), retry)


@kopf.on.event(GROUP, VERSION, PLURAL)
async def watch_events(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo,
                       **_: Any) -> None:
    await on_each_event(event, body, memo, KIND, PLURAL, delete_scheduled_call, track_in_sync)
