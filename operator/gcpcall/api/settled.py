"""Whether an object's status says its current generation was handled to an end.

Why: the operator keeps kopf's record of what it last handled in memory, not in an
annotation on every object (that annotation patch was one API write per object per
change). After a restart that memory is empty, and this predicate stands in for it: a
settled object is resumed (no Google write), any other is handled again as new, which
for our idempotent reconciles is always safe. "Settled" means nothing is left to retry:
the spec's generation is observed and the Ready reason is a final one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gcpcall.api.conditions import find_condition
from gcpcall.api.status import ReadyReason
from gcpcall.api.task_status import TERMINAL_PHASES

__all__ = ["RUN_REQUEST_ANNOTATION", "settled"]

RUN_REQUEST_ANNOTATION = "gcpcall.dev/run-requested-at"

# Ready reasons after which the reconcile asks for no retry until the object changes.
_FINAL_CALL = frozenset({ReadyReason.UP_TO_DATE, ReadyReason.PAUSED,
                         ReadyReason.INVALID_SPEC, ReadyReason.ADOPTION_REFUSED})
# A created task is the poller's; a missing queue is waited for by the poller too.
_FINAL_TASK = frozenset({ReadyReason.CREATED, ReadyReason.INVALID_SPEC,
                         ReadyReason.QUEUE_NOT_FOUND})


def settled(body: Mapping[str, Any]) -> bool:
    meta: Mapping[str, Any] = body.get("metadata") or {}
    status: Mapping[str, Any] = body.get("status") or {}
    if status.get("observedGeneration") != meta.get("generation"):
        return False
    ready = find_condition(status.get("conditions"), "Ready") or {}
    reason = ready.get("reason")
    if body.get("kind") == "GcpTask":
        return status.get("phase") in TERMINAL_PHASES or reason in _FINAL_TASK
    requested = (meta.get("annotations") or {}).get(RUN_REQUEST_ANNOTATION)
    return reason in _FINAL_CALL and requested in (None, status.get("lastRunRequest"))
