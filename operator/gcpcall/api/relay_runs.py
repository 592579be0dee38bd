"""How the relay tells runs apart and records what a call returned.

Why pure: the relay's bookkeeping is where "at most one successful call per scheduled
execution" is decided, from headers a caller sends and the object's status. Cloud Scheduler
sends no retry counter, only `X-CloudScheduler-ScheduleTime`, which every retry of one
execution repeats: that time is the run's key, and the attempts that carry it are one run.
Cloud Tasks sends the task's ETA and `X-CloudTasks-TaskRetryCount`. Those headers are used
for bookkeeping only (they never decide what is called) and are parsed strictly.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from gcpcall.api.observed import code_for_http_status, format_time, parse_time, rpc_code_name
from gcpcall.api.operations import OperationState
from gcpcall.api.status import OperationRecord, RunRecord, RunResult, attempt_message

__all__ = [
    "MAX_RESPONSE_CHARS",
    "CallOutcome",
    "already_exists",
    "find_run",
    "finished",
    "following",
    "outcome_of",
    "relay_run",
    "run_id",
    "schedule_time_header",
    "task_attempt",
    "task_eta",
    "trimmed",
]

MAX_RESPONSE_CHARS = 4096  # of a target's body kept in status: enough to read an error
_MAX_HEADER = 64
_RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)$")
_RUN_IDS = uuid.UUID("6b3c2a5e-2f8b-4d8e-9a41-0f5d3b2c9e17")  # the namespace of run ids


@dataclass(frozen=True)
class CallOutcome:
    """What the target answered (or why it did not)."""

    http_status: int | None  # None: no answer (connection failed, deadline passed)
    body: bytes = b""
    error: str = ""  # why there was no answer
    timed_out: bool = False
    # 409 ALREADY_EXISTS for a name only this run renders: an earlier attempt of this run
    # made it (its answer was lost), so the run is done, not failed
    already_made: bool = False

    @property
    def code(self) -> int:
        if self.already_made:
            return 0
        if self.http_status is not None:
            return code_for_http_status(self.http_status)
        return 4 if self.timed_out else 14  # DEADLINE_EXCEEDED, UNAVAILABLE

    @property
    def succeeded(self) -> bool:
        return self.code == 0


def schedule_time_header(value: str | None) -> datetime | None:
    """`X-CloudScheduler-ScheduleTime` (RFC 3339 with an offset); None if absent or bad."""
    if not value or len(value) > _MAX_HEADER or not _RFC3339.match(value.strip()):
        return None
    try:
        return parse_time(value.strip())
    except ValueError:
        return None


def task_eta(value: str | None) -> datetime | None:
    """`X-CloudTasks-TaskETA`: seconds since the epoch (with a fraction)."""
    if not value or len(value) > _MAX_HEADER:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    if not 0 < seconds < 1e11:
        return None
    return datetime.fromtimestamp(seconds, UTC)


def task_attempt(retry_count: str | None) -> int | None:
    """The attempt number from `X-CloudTasks-TaskRetryCount` (retries before this one)."""
    if not retry_count or not retry_count.isdigit() or len(retry_count) > 9:
        return None
    return int(retry_count) + 1


def run_id(uid: str, schedule_time: datetime) -> str:
    """The id of one scheduled execution: stable for its retries, new for the next run."""
    return str(uuid.uuid5(_RUN_IDS, f"{uid}/{format_time(schedule_time)}"))


def find_run(runs: Sequence[Mapping[str, Any]] | None,
             schedule_time: datetime) -> Mapping[str, Any] | None:
    key = format_time(schedule_time)
    return next((r for r in runs or () if r.get("scheduleTime") == key), None)


def trimmed(body: bytes) -> str:
    """A target's body for status: text, at most MAX_RESPONSE_CHARS, marked when cut."""
    text = body[: MAX_RESPONSE_CHARS * 4].decode("utf-8", "replace")
    text = "".join(c if c.isprintable() or c in "\n\t" else "?" for c in text)
    if len(text) > MAX_RESPONSE_CHARS:
        text = text[: MAX_RESPONSE_CHARS - 14] + "... [trimmed]"
    return text


def _detail(outcome: CallOutcome) -> str:
    """Google's error message from a JSON error body, else the start of the text."""
    if outcome.http_status is None:
        return outcome.error
    if outcome.succeeded:
        return ""
    try:
        doc: Any = json.loads(outcome.body[:65536])
    except (ValueError, UnicodeDecodeError):
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
        message = doc["error"].get("message")
        if isinstance(message, str):
            return trimmed(message.encode())[:512]
    return trimmed(outcome.body)[:200].strip()


def outcome_of(outcome: CallOutcome, host: str) -> tuple[RunResult, int, str]:
    """(result, google.rpc code, message) of one call, as status shows it."""
    if outcome.already_made:
        return RunResult.SUCCEEDED, 0, (
            f"HTTP 409 ALREADY_EXISTS from {host} for the name this run rendered: an earlier "
            "attempt of this run made it; recorded as made once, not as a failure")
    if outcome.succeeded:
        return RunResult.SUCCEEDED, 0, f"HTTP {outcome.http_status} from {host}"
    message = attempt_message(outcome.code, outcome.http_status, host, _detail(outcome))
    return RunResult.FAILED, outcome.code, message


def relay_run(
    previous: Mapping[str, Any] | None, *, uid: str, schedule_time: datetime, now: datetime,
    outcome: CallOutcome, host: str, request: Mapping[str, Any] | None = None,
) -> RunRecord:
    """The run after one more attempt: the first attempt's time stays, the count grows."""
    result, code, message = outcome_of(outcome, host)
    first = now
    attempts = 1
    if previous is not None:
        try:
            first = parse_time(str(previous.get("attemptTime") or ""))
        except ValueError:
            first = now
        attempts = int(previous.get("attempts") or 1) + 1
    return RunRecord(
        attempt_time=first, result=result, schedule_time=schedule_time, finish_time=now,
        code=code, http_status=outcome.http_status, message=message,
        run_id=run_id(uid, schedule_time), attempts=attempts, last_attempt_time=now,
        response=trimmed(outcome.body) if outcome.body else "", request=request,
    )



def _time(value: Any) -> datetime | None:
    try:
        return parse_time(str(value)) if value else None
    except ValueError:
        return None


def following(previous: RunRecord, operation: OperationRecord) -> RunRecord:
    """The run while the operation it started runs: Running, and how to resume it."""
    return replace(previous, result=RunResult.RUNNING, finish_time=None, operation=operation,
                   response="", message=f"operation {operation.name} is running")


def finished(run: Mapping[str, Any], *, now: datetime, state: OperationState | None,
             polls: int, timeout_seconds: int) -> RunRecord:
    """The run once its operation ended (`state`), or was given up on at its deadline
    (`state` None: DeadlineExceeded, and polling stops)."""
    op: Mapping[str, Any] = run.get("operation") or {}
    name = str(op.get("name") or "")
    base = RunRecord(
        attempt_time=_time(run.get("attemptTime")) or now, result=RunResult.FAILED,
        schedule_time=_time(run.get("scheduleTime")), finish_time=now,
        http_status=run.get("httpStatus"), run_id=str(run.get("id") or ""),
        attempts=run.get("attempts"), last_attempt_time=_time(run.get("lastAttemptTime")),
        response=str(run.get("response") or ""), request=run.get("request"))
    if state is None:
        record = OperationRecord(name, False, 4, f"not done within {timeout_seconds} s",
                                 poll_url=str(op.get("pollUrl") or ""), polls=polls)
        return replace(base, code=4, operation=record,
                       message=f"operation {name} was not done within {timeout_seconds} s "
                               "(operation.timeoutSeconds); it is no longer followed")
    record = OperationRecord(name, True, state.error_code, state.error_message,
                             state.response, poll_url=str(op.get("pollUrl") or ""),
                             polls=polls)
    if state.error_code:
        return replace(base, code=state.error_code, operation=record,
                       message=f"operation {name} failed: {rpc_code_name(state.error_code)}: "
                               f"{state.error_message}")
    return replace(base, result=RunResult.SUCCEEDED, code=0, operation=record,
                   message=f"operation {name} completed")


def already_exists(outcome: CallOutcome) -> bool:
    """A 409 whose Google error status is ALREADY_EXISTS."""
    if outcome.http_status != 409:
        return False
    doc = _json_error(outcome.body)
    return doc.get("status") == "ALREADY_EXISTS" or "already exists" in str(
        doc.get("message") or "").lower() or "already an active job" in str(
        doc.get("message") or "").lower()


def _json_error(body: bytes) -> dict[str, Any]:
    try:
        doc: Any = json.loads(body[:65536])
    except (ValueError, UnicodeDecodeError):
        return {}
    error = doc.get("error") if isinstance(doc, dict) else None
    return error if isinstance(error, dict) else {}
