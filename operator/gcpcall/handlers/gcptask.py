"""kopf handlers for GcpTask: thin, each calls one reconcile function.

Why thin: everything worth testing lives in `reconcile/gcptask.py` and the poller, where
it runs without kopf; here we only translate kopf's callbacks and retries. Only
`deletionPolicy` and `ttlSecondsAfterFinished` may change after creation (the CRD refuses
other edits: a GcpTask is one call, made once), so an update is answered without a Google
call.
"""

from __future__ import annotations

from typing import Any

import kopf

from gcpcall.api.task_status import TERMINAL_PHASES
from gcpcall.handlers import common
from gcpcall.handlers.common import GROUP, VERSION, deps_of, on_each_event, settle
from gcpcall.reconcile.deps import Deps
from gcpcall.reconcile.gcptask import (
    KIND,
    PLURAL,
    delete_gcp_task,
    follow_created,
    reconcile_gcp_task,
    resume_gcp_task,
)
from gcpcall.reconcile.objects import ObjectView

__all__: list[str] = []


def _view(body: kopf.Body) -> ObjectView:
    return ObjectView.from_body(body, KIND, PLURAL)


@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
async def create_cloud_task(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
    obj = _view(body)
    await settle(obj, reconcile_gcp_task(obj, deps_of(memo)), retry)


def _followed(deps: Deps, body: kopf.Body) -> bool:
    finished = (body.get("status") or {}).get("phase") in TERMINAL_PHASES
    return finished or deps.poller.follows(str(body.metadata.uid or ""))


# The listing event registers created and finished tasks (`watch_events`); this is for
# the rest.
@kopf.on.resume(GROUP, VERSION, PLURAL, when=common.resume_needed(_followed))
async def resume_task_polling(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
    obj = _view(body)
    await settle(obj, resume_gcp_task(obj, deps_of(memo)), retry)


@kopf.on.event(GROUP, VERSION, PLURAL)
async def watch_events(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo,
                       **_: Any) -> None:
    await on_each_event(event, body, memo, KIND, PLURAL, delete_gcp_task, follow_created)
