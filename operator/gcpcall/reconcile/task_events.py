"""The Events a GcpTask's status changes tell: Dispatched, AttemptFailed, Succeeded, Failed.

Why apart from the poller: the poller, the reconcile and the relay all change a task's
status, and the events must read the same whichever of them saw the change. Events are
derived from the status before and after a write, so a restart (which writes nothing new)
repeats none of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gcpcall.api.observed import rpc_code_name
from gcpcall.api.task_status import TERMINAL_PHASES
from gcpcall.kube import ObjectRef
from gcpcall.observe.events import EventRecorder
from gcpcall.reconcile.status_writer import Written

__all__ = ["post_transitions", "transitions"]


def _attempt_text(attempt: Mapping[str, Any]) -> str:
    code = attempt.get("code")
    text = f"attempt at {attempt.get('attemptTime')}"
    if code is None:
        return text
    http = attempt.get("httpStatus")
    text += ": " + (f"HTTP {http} " if http is not None else "") + rpc_code_name(int(code))
    detail = attempt.get("message")
    return text + (f" ({detail})" if detail else "")


def transitions(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """Events for what changed between two statuses: (type, reason, message)."""
    out: list[tuple[str, str, str]] = []
    dispatched = int(after.get("dispatchCount") or 0)
    if dispatched and not int(before.get("dispatchCount") or 0):
        out.append(("Normal", "Dispatched", f"Cloud Tasks dispatched the task "
                                            f"(first attempt at {after.get('firstAttemptTime')})"))
    attempt = after.get("lastAttempt") or {}
    if attempt and attempt != (before.get("lastAttempt") or {}) and attempt.get("code") not in (
        None, 0
    ):
        out.append(("Warning", "AttemptFailed", _attempt_text(attempt)))
    phase = after.get("phase")
    if phase != before.get("phase") and phase in TERMINAL_PHASES:
        message = next((str(c.get("message") or "") for c in after.get("conditions") or ()
                        if c.get("type") == "Succeeded"), "")
        if phase == "Succeeded":
            out.append(("Normal", "Succeeded", message or "the call succeeded"))
        elif phase == "Failed":
            out.append(("Warning", "Failed", message or "the call failed"))
        else:
            out.append(("Normal", "Finished", message or "the task finished"))
    return out


def post_transitions(events: EventRecorder, ref: ObjectRef, written: Written | None) -> None:
    """Post an event per transition of a write that changed something."""
    if written is None:
        return
    for type_, reason, message in transitions(written.before, written.after):
        if type_ == "Warning":
            events.warning(ref, reason, message)
        else:
            events.normal(ref, reason, message)
