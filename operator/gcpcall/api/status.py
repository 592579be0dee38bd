"""Status of a ScheduledGcpCall: Ready, LastRunSucceeded, and the run history.

Why pure: the reconciler (Ready), the batched sync (state, nextRunTime, Direct runs) and
the relay (Relay runs with their operation) each write their part of this status
(`api.ownership`). Building the parts here from plain observed values makes them agree on
one shape, and the status writer then sends only changes. Shared pieces (conditions,
patch, run records) are re-exported for a single import point.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from gcpcall.api.conditions import (
    Condition,
    ConditionStatus,
    set_condition,
    status_patch,
)
from gcpcall.api.observed import ObservedJob, format_time, parse_time, rpc_code_name
from gcpcall.api.ownership import Owner, Part

__all__ = [
    "LAST_RUN_SUCCEEDED",
    "READY",
    "Condition",
    "ConditionStatus",
    "LastRunReason",
    "OperationRecord",
    "ReadyReason",
    "RunRecord",
    "RunResult",
    "attempt_message",
    "job_part",
    "last_run_condition",
    "merge_runs",
    "parse_time",
    "ready_condition",
    "reconciler_part",
    "recorded_runs",
    "run_from_job",
    "runs_part",
    "set_condition",
    "status_patch",
]

READY = "Ready"
LAST_RUN_SUCCEEDED = "LastRunSucceeded"
_DEADLINE_EXCEEDED = 4


class ReadyReason(StrEnum):
    UP_TO_DATE = "UpToDate"
    CREATING = "Creating"  # a create under way for longer than a moment (quota, slow Google)
    UPDATING = "Updating"  # likewise for an update of an existing job
    DELETING = "Deleting"  # a delete under way, retrying a transient failure
    PAUSED = "Paused"
    INVALID_SPEC = "InvalidSpec"
    IDENTITY_NOT_READY = "IdentityNotReady"
    PERMISSION_DENIED = "PermissionDenied"
    NOT_FOUND = "NotFound"
    GCP_ERROR = "GcpError"
    DELETION_BLOCKED = "DeletionBlocked"
    ADOPTION_REFUSED = "AdoptionRefused"  # a job of the same id carries another marker
    CREATED = "Created"  # GcpTask: the task exists in Cloud Tasks
    QUEUE_NOT_FOUND = "QueueNotFound"  # GcpTask
    BODY_SOURCE_NOT_FOUND = "BodySourceNotFound"  # body.fromConfigMap/fromSecret not there yet
    RELAY_NOT_CONFIGURED = "RelayNotConfigured"  # delivery: Relay, no usable relay URL


# The job (task) exists as specified: Ready=True. Everything else is Ready=False.
_READY_TRUE = frozenset({ReadyReason.UP_TO_DATE, ReadyReason.PAUSED, ReadyReason.CREATED})


class LastRunReason(StrEnum):
    SUCCEEDED = "Succeeded"
    TARGET_ERROR = "TargetError"
    OPERATION_FAILED = "OperationFailed"
    OPERATION_RUNNING = "OperationRunning"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    NO_RUN_YET = "NoRunYet"


class RunResult(StrEnum):
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    RUNNING = "Running"
    UNKNOWN = "Unknown"


def ready_condition(reason: ReadyReason, message: str = "") -> Condition:
    status = ConditionStatus.TRUE if reason in _READY_TRUE else ConditionStatus.FALSE
    return Condition(READY, status, reason.value, message)


@dataclass(frozen=True)
class OperationRecord:
    """A long-running operation the relay follows (Relay with operation.follow).

    While it runs, `poll_url` and `deadline` are what a restarted operator resumes from.
    """

    name: str
    done: bool
    error_code: int | None = None
    error_message: str = ""
    response: Mapping[str, Any] | None = None  # already trimmed
    poll_url: str = ""
    deadline: datetime | None = None
    polls: int | None = None

    def to_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "done": self.done}
        if self.error_code is not None:
            out["error"] = {"code": self.error_code, "message": self.error_message}
        if self.response is not None:
            out["response"] = dict(self.response)
        if self.poll_url:
            out["pollUrl"] = self.poll_url
        if self.deadline is not None:
            out["deadline"] = format_time(self.deadline)
        if self.polls is not None:
            out["polls"] = self.polls
        return out


@dataclass(frozen=True)
class RunRecord:
    """One run as `status.runs[]` shows it.

    Direct delivery knows only Cloud Scheduler's last attempt of a run. The relay sees every
    attempt of one scheduled execution: `attempt_time` is the first, `last_attempt_time`
    the latest, `attempts` their count; `response` is the target's body, trimmed; `request`
    the rendered request (uri and templated values) and `run_id` the id templates saw.
    """

    attempt_time: datetime
    result: RunResult
    schedule_time: datetime | None = None
    finish_time: datetime | None = None
    code: int | None = None
    http_status: int | None = None
    message: str = ""
    operation: OperationRecord | None = None
    run_id: str = ""
    attempts: int | None = None
    last_attempt_time: datetime | None = None
    response: str = ""
    request: Mapping[str, Any] | None = None

    def to_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.run_id:
            out["id"] = self.run_id
        if self.schedule_time is not None:
            out["scheduleTime"] = format_time(self.schedule_time)
        out["attemptTime"] = format_time(self.attempt_time)
        if self.last_attempt_time is not None:
            out["lastAttemptTime"] = format_time(self.last_attempt_time)
        if self.attempts is not None:
            out["attempts"] = self.attempts
        if self.finish_time is not None:
            out["finishTime"] = format_time(self.finish_time)
        out["result"] = self.result.value
        if self.code is not None:
            out["code"] = self.code
        if self.http_status is not None:
            out["httpStatus"] = self.http_status
        if self.message:
            out["message"] = self.message
        if self.response:
            out["response"] = self.response
        if self.request is not None:
            out["request"] = dict(self.request)
        if self.operation is not None:
            out["operation"] = self.operation.to_status()
        return out


def attempt_message(code: int, http_status: int | None, host: str, detail: str) -> str:
    """`HTTP 403 PERMISSION_DENIED from compute.googleapis.com: detail` (parts when known)."""
    head = f"HTTP {http_status} " if http_status is not None else ""
    text = f"{head}{rpc_code_name(code)}" + (f" from {host}" if host else "")
    return f"{text}: {detail}" if detail else text


def run_from_job(
    job: ObservedJob, *, target_host: str = "", schedule_time: datetime | None = None
) -> RunRecord | None:
    """The run a job's `last_attempt_time`/`status` describe; None before the first attempt.

    `schedule_time` is the job's previous `nextRunTime`, when the caller knows it (Cloud
    Scheduler reports only the next one). Direct delivery never knows the HTTP status.
    """
    if job.last_attempt_time is None:
        return None
    code = job.status_code or 0
    result = RunResult.SUCCEEDED if code == 0 else RunResult.FAILED
    message = "" if code == 0 else attempt_message(code, None, target_host,
                                                   job.status_message)
    if schedule_time is not None and schedule_time > job.last_attempt_time:
        schedule_time = None
    return RunRecord(attempt_time=job.last_attempt_time, result=result,
                     schedule_time=schedule_time, code=code, message=message)


def _sort_key(run: Mapping[str, Any]) -> tuple[datetime, str]:
    try:
        when = parse_time(str(run.get("attemptTime") or ""))
    except ValueError:
        when = datetime.min.replace(tzinfo=UTC)
    return when, str(run.get("scheduleTime") or "")


def _same_run(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """A relay run is one scheduled execution (its id); a Direct run is one attempt."""
    if a.get("id") or b.get("id"):
        return bool(a.get("id")) and a.get("id") == b.get("id")
    return a.get("attemptTime") == b.get("attemptTime")


def merge_runs(
    runs: Sequence[Mapping[str, Any]] | None, run: RunRecord, history_limit: int
) -> list[dict[str, Any]]:
    """`runs` with `run` added (or replacing the entry of the same run), newest first (by
    attempt time, then schedule time), at most `history_limit` long."""
    entry = run.to_status()
    kept = [dict(r) for r in runs or () if not _same_run(r, entry)]
    kept.append(entry)
    kept.sort(key=_sort_key, reverse=True)
    return kept[: max(history_limit, 0)]


def last_run_condition(last_run: Mapping[str, Any] | None) -> Condition:
    """LastRunSucceeded from the newest run (`status.lastRun`), or NoRunYet."""
    if not last_run:
        return Condition(LAST_RUN_SUCCEEDED, ConditionStatus.UNKNOWN,
                         LastRunReason.NO_RUN_YET.value, "no run observed yet")
    result = last_run.get("result")
    message = str(last_run.get("message") or "")
    operation = last_run.get("operation") or {}
    code = last_run.get("code")
    if result == RunResult.SUCCEEDED:
        return Condition(LAST_RUN_SUCCEEDED, ConditionStatus.TRUE,
                         LastRunReason.SUCCEEDED.value, message)
    if result == RunResult.RUNNING:
        return Condition(LAST_RUN_SUCCEEDED, ConditionStatus.UNKNOWN,
                         LastRunReason.OPERATION_RUNNING.value,
                         message or f"operation {operation.get('name', '')} is running")
    if result == RunResult.UNKNOWN:
        # The relay stopped following an operation before it finished.
        return Condition(LAST_RUN_SUCCEEDED, ConditionStatus.UNKNOWN,
                         LastRunReason.DEADLINE_EXCEEDED.value, message)
    if operation and not operation.get("done") and code == _DEADLINE_EXCEEDED:
        reason = LastRunReason.DEADLINE_EXCEEDED  # followed until operation.timeoutSeconds
    elif operation.get("error"):
        reason = LastRunReason.OPERATION_FAILED
        message = message or str(operation["error"].get("message") or "")
    elif code == _DEADLINE_EXCEEDED:
        reason = LastRunReason.DEADLINE_EXCEEDED
    else:
        reason = LastRunReason.TARGET_ERROR
    return Condition(LAST_RUN_SUCCEEDED, ConditionStatus.FALSE, reason.value, message)


def reconciler_part(
    ready: Condition | None,
    *,
    generation: int | None = None,
    identity: Mapping[str, str] | None = None,
    job_name: str | None = None,
    task_name: str | None = None,
    last_run_request: str | None = None,
) -> Part:
    """The spec reconciler's part, for either kind: Ready, and what it observed of the spec
    and made in Google (jobName or taskName, identity, the run-now request it handled).

    `generation` is given only by a reconcile that handled that spec; the sync's drift
    check reports Ready without claiming to have observed a newer spec.
    """
    given = {"observedGeneration": generation, "jobName": job_name, "taskName": task_name,
             "lastRunRequest": last_run_request,
             "identity": dict(identity) if identity is not None else None}
    fields = {k: v for k, v in given.items() if v is not None}
    return Part(Owner.RECONCILER, fields, (ready,) if ready is not None else ())


def job_part(job: ObservedJob) -> Part:
    """The sync's part: the job's state and next run (None removes it: a paused job has
    no next run)."""
    return Part(Owner.SYNC, {
        "state": job.state,
        "nextRunTime": format_time(job.next_run_time) if job.next_run_time else None,
    })


def recorded_runs(status: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Every run the status still holds, newest first: `runs`, and `lastRun` when it is
    not among them (`historyLimit: 0` keeps no list, but the newest run is still known).
    The status's own entries, not copies: read them, never change them."""
    runs: list[Mapping[str, Any]] = list(status.get("runs") or ())
    last = status.get("lastRun")
    if last and not any(_same_run(r, last) for r in runs):
        runs.insert(0, last)
    return runs


def runs_part(
    owner: Owner, current: Mapping[str, Any], run: RunRecord | None, history_limit: int
) -> Part:
    """The run owner's part (the sync in Direct delivery, the relay in Relay delivery):
    `runs` with `run` merged in and trimmed to `history_limit`, `lastRun` = the newest run
    (kept even with `historyLimit: 0`, which only empties the list), and LastRunSucceeded
    from it (NoRunYet before the first run)."""
    kept = [dict(r) for r in recorded_runs(current)]
    newest = merge_runs(kept, run, max(history_limit, 1)) if run else kept
    last = newest[0] if newest else None
    runs = newest[: max(history_limit, 0)]
    fields: dict[str, Any] = {"runs": runs or None, "lastRun": last}
    return Part(owner, fields, (last_run_condition(last),))
