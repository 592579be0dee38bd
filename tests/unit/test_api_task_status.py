"""GcpTask outcome: Succeeded only where success was observed; never a guess."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gcpcall.api.conditions import find_condition
from gcpcall.api.observed import ObservedAttempt, ObservedTask
from gcpcall.api.ownership import Owner, OwnershipError, apply_parts
from gcpcall.api.status import ReadyReason, ready_condition, reconciler_part, status_patch
from gcpcall.api.task_status import (
    SUCCEEDED,
    TaskPhase,
    attempt_fields,
    outcome_part,
    read_part,
    task_outcome,
)

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
NAME = "projects/p/locations/l/queues/etl/tasks/abc_team-a_launch"


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def observed(dispatches: int = 0, code: int | None = None, http: int | None = None) -> ObservedTask:
    last = None
    if dispatches:
        last = ObservedAttempt(dispatch_time=at(dispatches), response_time=None if code is None
                               else at(dispatches + 1), code=code, http_status=http,
                               message="" if code in (None, 0) else "Service Unavailable")
    return ObservedTask(NAME, schedule_time=T0, create_time=at(-60), dispatch_count=dispatches,
                        response_count=dispatches if code is not None else dispatches - 1,
                        first_attempt_time=at(1) if dispatches else None, last_attempt=last)


def task_fields(task: ObservedTask) -> dict[str, Any]:
    """What the poller's read adds, and the attempt it saw."""
    out = dict(read_part(task).fields)
    if task.last_attempt is not None:
        out["lastAttempt"] = attempt_fields(task.last_attempt)
    return out


def polled(current: dict[str, Any] | None, now: datetime, task: ObservedTask | None, *,
           created: bool = True, relay: bool = False, **kw: Any) -> dict[str, Any]:
    """A poll as the poller writes it: the read fields, then the outcome (Direct)."""
    owner = Owner.RELAY if relay else Owner.POLLER
    parts: list[Any] = [read_part(task)] if created else []
    parts.append(lambda st: outcome_part(
        owner, st, now=now, created=created, exists=task is not None,
        attempt=task.last_attempt if task is not None and not relay else None, **kw))
    return apply_parts("GcpTask", relay, current or {}, parts, now)[0]


def outcome(status: dict[str, Any] | None, **kw: Any) -> tuple[str, str, str]:
    result = task_outcome(status, **{"created": True, "exists": True, **kw})
    return result.phase.value, result.succeeded.status.value, result.succeeded.reason


def test_task_fields() -> None:
    fields = task_fields(observed(2, code=14))
    assert fields == {
        "dispatchCount": 2, "responseCount": 2,
        "scheduleTime": "2026-11-22T12:00:00Z", "firstAttemptTime": "2026-11-22T12:00:01Z",
        "lastAttempt": {"attemptTime": "2026-11-22T12:00:02Z", "code": 14,
                        "message": "Service Unavailable"},
    }
    assert "lastAttempt" not in task_fields(observed(0))


def test_lifecycle_phases_while_the_task_exists() -> None:
    assert outcome(None, created=False, exists=False) == ("Pending", "Unknown", "Pending")
    assert outcome(task_fields(observed(0))) == ("Queued", "Unknown", "Queued")
    assert outcome(task_fields(observed(1))) == ("Running", "Unknown", "Running")
    assert outcome(task_fields(observed(2, code=14))) == ("Running", "Unknown", "Running")


def test_paused_queue_is_said_in_the_queued_message() -> None:
    result = task_outcome(task_fields(observed(0)), created=True, exists=True, queue_paused=True)
    assert result.phase is TaskPhase.QUEUED
    assert "paused" in result.succeeded.message


def test_success_observed_by_the_relay_is_succeeded() -> None:
    status = task_fields(observed(1))
    status["lastAttempt"] = {"attemptTime": "2026-11-22T12:00:01Z", "code": 0, "httpStatus": 200}
    assert outcome(status, exists=False) == ("Succeeded", "True", "Succeeded")


def test_success_seen_in_a_fetched_task_is_succeeded() -> None:
    assert outcome(task_fields(observed(1, code=0))) == ("Succeeded", "True", "Succeeded")


@pytest.mark.parametrize("dispatches", [0, 1, 3])
def test_vanished_task_without_observed_success_is_unknown(dispatches: int) -> None:
    """Direct mode: Cloud Tasks deletes the task after success AND after its last failure."""
    status = task_fields(observed(dispatches, code=14 if dispatches else None))
    result = task_outcome(status, created=True, exists=False)
    assert (result.phase, result.succeeded.status.value, result.succeeded.reason) == (
        TaskPhase.UNKNOWN, "Unknown", "CompletedOutcomeUnknown")
    assert result.finished


def test_vanished_after_as_many_failed_attempts_as_allowed_is_still_unknown() -> None:
    """The failure read may be an earlier attempt's: Cloud Tasks deletes the task right
    after its last response, which is never read (api.md: never guessed either way)."""
    status = task_fields(observed(3, code=14))
    assert outcome(status, exists=False) == ("Unknown", "Unknown", "CompletedOutcomeUnknown")


def test_operation_outcomes_take_precedence() -> None:
    base = task_fields(observed(1))
    base["lastAttempt"] = {"attemptTime": "2026-11-22T12:00:01Z", "code": 0, "httpStatus": 200}
    running = {**base, "operation": {"name": "op", "done": False}}
    assert outcome(running, exists=False) == ("Running", "Unknown", "OperationRunning")
    done = {**base, "operation": {"name": "op", "done": True}}
    assert outcome(done, exists=False) == ("Succeeded", "True", "Succeeded")
    failed = {**base, "operation": {"name": "op", "done": True, "error": {"code": 3,
                                                                          "message": "bad"}}}
    assert outcome(failed, exists=False) == ("Failed", "False", "OperationFailed")
    timeout = {**base, "operation": {"name": "op", "done": False, "error": {"code": 4}}}
    assert outcome(timeout, exists=False) == ("Failed", "False", "DeadlineExceeded")


def test_terminal_phases_are_sticky() -> None:
    status = polled(None, at(5), observed(1, code=0))
    assert status["phase"] == "Succeeded"
    later = polled(status, at(50), None)
    assert later["phase"] == "Succeeded"
    assert status_patch(status, later) == {}


def test_task_status_flow_and_completion_time() -> None:
    created = ready_condition(ReadyReason.CREATED)
    s1 = polled(None, at(0), observed(0))
    s1 = apply_parts("GcpTask", False, s1,
                     [reconciler_part(created, generation=1, task_name=NAME)], at(0))[0]
    assert s1["phase"] == "Queued"
    assert "completionTime" not in s1
    assert {c["type"] for c in s1["conditions"]} == {"Ready", SUCCEEDED}
    s2 = polled(s1, at(10), observed(2, 14))
    patch = status_patch(s1, s2)
    assert patch["phase"] == "Running"
    assert patch["dispatchCount"] == 2
    assert patch["lastAttempt"]["code"] == 14
    s3 = polled(s2, at(20), None)
    assert s3["phase"] == "Unknown"
    assert s3["completionTime"] == "2026-11-22T12:00:20Z"
    cond = find_condition(s3["conditions"], SUCCEEDED)
    assert cond is not None
    assert cond["reason"] == "CompletedOutcomeUnknown"
    assert "Direct delivery" in cond["message"]
    # Ready stays as the reconciler set it: the task was created as specified.
    ready = find_condition(s3["conditions"], "Ready")
    assert ready is not None
    assert ready["status"] == "True"


def test_a_relay_task_gone_without_a_success_the_relay_saw_failed() -> None:
    relay_seen = {"phase": "Running", "dispatchCount": 2,
                  "lastAttempt": {"attemptTime": "2026-11-22T12:00:01Z", "code": 14,
                                  "httpStatus": 503, "message": "from the relay"}}
    gone = polled(relay_seen, at(30), None, relay=True)
    assert gone["phase"] == "Failed"
    cond = find_condition(gone["conditions"], SUCCEEDED)
    assert cond is not None
    assert (cond["status"], cond["reason"]) == ("False", "TargetError")
    assert "HTTP 503" in cond["message"]
    succeeded = {**relay_seen, "lastAttempt": {"attemptTime": "2026-11-22T12:00:01Z",
                                               "code": 0, "httpStatus": 200}}
    assert polled(succeeded, at(30), None, relay=True)["phase"] == "Succeeded"


def test_the_poller_does_not_write_a_relay_tasks_outcome() -> None:
    with pytest.raises(OwnershipError, match="poller does not own"):
        apply_parts("GcpTask", True, {}, [lambda st: outcome_part(
            Owner.POLLER, st, now=T0, created=True, exists=True)], T0)


def test_a_later_read_of_the_same_attempt_keeps_what_the_first_said() -> None:
    first = {"lastAttempt": {"attemptTime": "2026-11-22T12:00:01Z", "code": 14,
                             "message": "Service Unavailable"}}
    again = ObservedAttempt(dispatch_time=at(1))  # Cloud Tasks: no response recorded yet
    task = ObservedTask(NAME, dispatch_count=1, last_attempt=again)
    status = polled(first, at(3), task)
    assert status["lastAttempt"] == {"attemptTime": "2026-11-22T12:00:01Z", "code": 14,
                                     "message": "Service Unavailable"}
