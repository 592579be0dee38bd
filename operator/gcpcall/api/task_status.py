"""Status of a GcpTask: phase, Ready, Succeeded, and the outcome rule of api.md.

Why a rule of its own: in Direct mode Cloud Tasks deletes a task both after success and
after its last failed attempt, so "the task is gone" does not mean "it worked". The rule
here reports Succeeded only where success was observed (a 2xx response seen by the relay or
in a fetched task, or a completed operation) and otherwise says Unknown with reason
`CompletedOutcomeUnknown`, never a guess. Failed needs proof too: the operation failed, or
the last allowed attempt was seen failing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from gcpcall.api.conditions import Condition, ConditionStatus, find_condition
from gcpcall.api.observed import ObservedAttempt, ObservedTask, format_time, rpc_code_name
from gcpcall.api.ownership import Owner, Part

__all__ = [
    "SUCCEEDED",
    "TERMINAL_PHASES",
    "TaskOutcome",
    "TaskPhase",
    "TaskReason",
    "attempt_fields",
    "outcome_part",
    "read_part",
    "task_outcome",
]

SUCCEEDED = "Succeeded"
_DEADLINE_EXCEEDED = 4


class TaskPhase(StrEnum):
    PENDING = "Pending"
    QUEUED = "Queued"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    UNKNOWN = "Unknown"


TERMINAL_PHASES = frozenset({TaskPhase.SUCCEEDED, TaskPhase.FAILED, TaskPhase.UNKNOWN})


class TaskReason(StrEnum):
    """Reasons of the Succeeded condition."""

    PENDING = "Pending"
    QUEUED = "Queued"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    TARGET_ERROR = "TargetError"
    OPERATION_RUNNING = "OperationRunning"
    OPERATION_FAILED = "OperationFailed"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    COMPLETED_OUTCOME_UNKNOWN = "CompletedOutcomeUnknown"


@dataclass(frozen=True)
class TaskOutcome:
    phase: TaskPhase
    succeeded: Condition

    @property
    def finished(self) -> bool:
        return self.phase in TERMINAL_PHASES


def attempt_fields(attempt: ObservedAttempt) -> dict[str, Any]:
    """`status.lastAttempt`: attemptTime, and code/httpStatus/message once answered."""
    out: dict[str, Any] = {"attemptTime": format_time(attempt.dispatch_time)}
    if attempt.code is not None:
        out["code"] = attempt.code
    if attempt.http_status is not None:
        out["httpStatus"] = attempt.http_status
    if attempt.message:
        out["message"] = attempt.message
    return out


def _cond(status: ConditionStatus, reason: TaskReason, message: str = "") -> Condition:
    return Condition(SUCCEEDED, status, reason.value, message)


def _describe(attempt: Mapping[str, Any]) -> str:
    code = attempt.get("code")
    if code is None:
        return f"attempt at {attempt.get('attemptTime')} has no response yet"
    http = attempt.get("httpStatus")
    text = (f"HTTP {http} " if http is not None else "") + rpc_code_name(int(code))
    detail = attempt.get("message")
    return f"last attempt at {attempt.get('attemptTime')}: {text}" + (
        f": {detail}" if detail else "")


def task_outcome(
    status: Mapping[str, Any] | None,
    *,
    created: bool,
    exists: bool,
    queue_paused: bool = False,
    relay: bool = False,
) -> TaskOutcome:
    """Phase and Succeeded condition from a status already merged with the latest read.

    `relay`: the relay saw every attempt it was sent, so a task gone without a success it
    recorded failed (Relay ends Succeeded or Failed, never Unknown).

    `status` carries what was observed over time (`lastAttempt`, `dispatchCount`,
    `operation` written by the relay, the previous `phase`); `created` says CreateTask
    succeeded (or answered ALREADY_EXISTS); `exists` says the last GET found the task.
    In Direct delivery a task gone after a failed attempt is Unknown even when the
    attempts seem used up: Cloud Tasks deletes it right after its last response, so that
    response is never read, and the one read may be an earlier attempt's (api.md).
    """
    st = status or {}
    previous = st.get("phase")
    if previous in (TaskPhase.SUCCEEDED, TaskPhase.FAILED):
        prev_cond = find_condition(st.get("conditions"), SUCCEEDED) or {}
        return TaskOutcome(TaskPhase(previous), Condition(
            SUCCEEDED, ConditionStatus(prev_cond.get("status", "Unknown")),
            str(prev_cond.get("reason") or previous), str(prev_cond.get("message") or "")))
    operation: Mapping[str, Any] = st.get("operation") or {}
    attempt: Mapping[str, Any] = st.get("lastAttempt") or {}
    dispatches = int(st.get("dispatchCount") or 0)
    if operation:
        error = operation.get("error") or {}
        name = operation.get("name", "")
        if error:
            reason = (TaskReason.DEADLINE_EXCEEDED
                      if error.get("code") == _DEADLINE_EXCEEDED and not operation.get("done")
                      else TaskReason.OPERATION_FAILED)
            return TaskOutcome(TaskPhase.FAILED, _cond(
                ConditionStatus.FALSE, reason, f"operation {name}: {error.get('message', '')}"))
        if operation.get("done"):
            return TaskOutcome(TaskPhase.SUCCEEDED, _cond(
                ConditionStatus.TRUE, TaskReason.SUCCEEDED, f"operation {name} completed"))
        return TaskOutcome(TaskPhase.RUNNING, _cond(
            ConditionStatus.UNKNOWN, TaskReason.OPERATION_RUNNING, f"operation {name} running"))
    if attempt.get("code") == 0:
        return TaskOutcome(TaskPhase.SUCCEEDED, _cond(
            ConditionStatus.TRUE, TaskReason.SUCCEEDED, _describe(attempt)))
    if not created:
        return TaskOutcome(TaskPhase.PENDING, _cond(
            ConditionStatus.UNKNOWN, TaskReason.PENDING, "the task is not created yet"))
    if exists:
        if dispatches == 0 and not attempt:
            note = "the queue is paused" if queue_paused else "waiting for its schedule time"
            return TaskOutcome(TaskPhase.QUEUED, _cond(
                ConditionStatus.UNKNOWN, TaskReason.QUEUED, note))
        return TaskOutcome(TaskPhase.RUNNING, _cond(
            ConditionStatus.UNKNOWN, TaskReason.RUNNING,
            f"{dispatches} attempt(s); " + (_describe(attempt) if attempt else "")))
    # Gone from Cloud Tasks: finished, one way or the other.
    if relay:
        seen = _describe(attempt) if attempt else "the relay received no attempt"
        return TaskOutcome(TaskPhase.FAILED, _cond(
            ConditionStatus.FALSE, TaskReason.TARGET_ERROR,
            f"Cloud Tasks finished the task without a successful call ({seen})"))
    seen = _describe(attempt) if attempt else "no attempt was observed"
    return TaskOutcome(TaskPhase.UNKNOWN, _cond(
        ConditionStatus.UNKNOWN, TaskReason.COMPLETED_OUTCOME_UNKNOWN,
        "the task finished and Cloud Tasks deleted it without reporting its outcome "
        f"({seen}); with Direct delivery the outcome cannot be observed"))


def read_part(task: ObservedTask | None) -> Part:
    """The poller's part from a fetched task: what Cloud Tasks reports of it (nothing when
    it is gone: the last values read stay)."""
    if task is None:
        return Part(Owner.POLLER)
    fields: dict[str, Any] = {
        "dispatchCount": task.dispatch_count,
        "responseCount": task.response_count,
    }
    if task.schedule_time is not None:
        fields["scheduleTime"] = format_time(task.schedule_time)
    if task.first_attempt_time is not None:
        fields["firstAttemptTime"] = format_time(task.first_attempt_time)
    return Part(Owner.POLLER, fields)


def outcome_part(
    owner: Owner,
    current: Mapping[str, Any],
    *,
    now: datetime,
    created: bool,
    exists: bool,
    attempt: ObservedAttempt | None = None,
    queue_paused: bool = False,
    extra: Mapping[str, Any] | None = None,
) -> Part:
    """The outcome owner's part (the poller in Direct delivery, the relay in Relay
    delivery): phase, lastAttempt, completionTime and Succeeded, by `task_outcome`.

    `attempt` is the newest attempt the owner saw (a fetched task's, or the relay's own
    with its HTTP status); a later read of the same attempt keeps what the first said.
    `extra` are further fields of the owner (the relay's `operation`). `completionTime`
    is stamped once, when the phase first becomes terminal.
    """
    merged: dict[str, Any] = dict(current)
    fields: dict[str, Any] = dict(extra or {})
    merged.update(fields)
    if attempt is not None:
        old = merged.get("lastAttempt") or {}
        new = attempt_fields(attempt)
        if owner is Owner.POLLER and old.get("attemptTime") == new["attemptTime"]:
            new = {**old, **new}  # a later read of the same attempt: keep what it said
        fields["lastAttempt"] = new
        merged["lastAttempt"] = new
    outcome = task_outcome(merged, created=created, exists=exists,
                           queue_paused=queue_paused, relay=owner is Owner.RELAY)
    fields["phase"] = outcome.phase.value
    if outcome.finished and not merged.get("completionTime"):
        fields["completionTime"] = format_time(now)
    return Part(owner, fields, (outcome.succeeded,))
