"""ScheduledGcpCall status: condition semantics, run history, and minimal patches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gcpcall.api.conditions import Condition, ConditionStatus, find_condition, set_condition
from gcpcall.api.observed import NoOffset, ObservedJob, format_time, parse_time
from gcpcall.api.ownership import Owner, OwnershipError, Part, apply_parts
from gcpcall.api.status import (
    LAST_RUN_SUCCEEDED,
    READY,
    OperationRecord,
    ReadyReason,
    RunRecord,
    RunResult,
    job_part,
    last_run_condition,
    merge_runs,
    ready_condition,
    reconciler_part,
    recorded_runs,
    run_from_job,
    runs_part,
    status_patch,
)

T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_times_are_rfc3339_whole_seconds_utc() -> None:
    berlin = datetime(2026, 11, 22, 10, 5, 7, 123456, tzinfo=UTC).astimezone(
        __import__("zoneinfo").ZoneInfo("Europe/Berlin"))
    assert format_time(berlin) == "2026-11-22T10:05:07Z"
    assert parse_time("2026-11-22T10:05:07Z") == datetime(2026, 11, 22, 10, 5, 7, tzinfo=UTC)


def test_parse_time_reads_google_fractions_offsets_and_refuses_a_missing_offset_on_request(
) -> None:
    want = datetime(2026, 11, 22, 10, 5, 7, 45123, tzinfo=UTC)
    assert parse_time("2026-11-22T10:05:07.045123456Z") == want  # nanoseconds, as Google
    assert parse_time("2026-11-22T11:05:07.045123z") == want + timedelta(hours=1)
    assert parse_time("2026-11-22T12:05:07.045123+02:00") == want
    assert parse_time("2026-11-22T10:05:07.045123") == want  # taken as UTC by default
    with pytest.raises(NoOffset):
        parse_time("2026-11-22T10:05:07", assume_utc=False)
    with pytest.raises(ValueError, match="not-a-time"):
        parse_time("not-a-time")


# -- conditions --

def test_new_condition_gets_now_and_generation() -> None:
    conds = set_condition([], ready_condition(ReadyReason.GCP_ERROR), generation=3, now=at(0))
    assert conds == [{"type": "Ready", "status": "False", "reason": "GcpError", "message": "",
                      "lastTransitionTime": "2026-11-22T09:00:00Z", "observedGeneration": 3}]


def test_transition_time_kept_while_status_does_not_flip() -> None:
    conds = set_condition([], ready_condition(ReadyReason.GCP_ERROR), generation=1, now=at(0))
    conds = set_condition(conds, ready_condition(ReadyReason.GCP_ERROR, "UNAVAILABLE"),
                          generation=2, now=at(5))
    ready = find_condition(conds, READY)
    assert ready is not None
    assert ready["lastTransitionTime"] == format_time(at(0))
    assert (ready["reason"], ready["message"], ready["observedGeneration"]) == (
        "GcpError", "UNAVAILABLE", 2)
    conds = set_condition(conds, ready_condition(ReadyReason.UP_TO_DATE), generation=2,
                          now=at(9))
    ready = find_condition(conds, READY)
    assert ready is not None
    assert (ready["status"], ready["lastTransitionTime"]) == ("True", format_time(at(9)))


def test_set_condition_keeps_other_conditions_and_their_order() -> None:
    conds = set_condition([], ready_condition(ReadyReason.UP_TO_DATE), generation=1, now=at(0))
    conds = set_condition(conds, last_run_condition(None), generation=1, now=at(0))
    conds = set_condition(conds, ready_condition(ReadyReason.PAUSED), generation=2, now=at(1))
    assert [c["type"] for c in conds] == [READY, LAST_RUN_SUCCEEDED]
    assert conds[1]["observedGeneration"] == 1


def test_ready_status_by_reason() -> None:
    true = {ReadyReason.UP_TO_DATE, ReadyReason.PAUSED, ReadyReason.CREATED}
    for reason in ReadyReason:
        expected = ConditionStatus.TRUE if reason in true else ConditionStatus.FALSE
        assert ready_condition(reason).status is expected, reason


def test_long_messages_are_shortened() -> None:
    conds = set_condition([], Condition("Ready", ConditionStatus.FALSE, "GcpError", "x" * 9000),
                          generation=None, now=at(0))
    assert len(conds[0]["message"]) == 4096
    assert "observedGeneration" not in conds[0]


# -- the minimal patch --

def _first(ready: ReadyReason, now: datetime, current: Any = None) -> dict[str, Any]:
    return sgc(current, reconciler_part(ready_condition(ready), generation=1),
               lambda st: runs_part(Owner.SYNC, st, None, 10), now=now)


def test_patch_is_empty_when_nothing_changed() -> None:
    current = _first(ReadyReason.UP_TO_DATE, at(0))
    again = _first(ReadyReason.UP_TO_DATE, at(10), current)
    assert status_patch(current, again) == {}


def test_patch_sends_the_whole_conditions_list_when_one_changed() -> None:
    current = _first(ReadyReason.UP_TO_DATE, at(0))
    desired = _first(ReadyReason.PAUSED, at(1), current)
    patch = status_patch(current, desired)
    assert set(patch) == {"conditions"}
    assert [c["type"] for c in patch["conditions"]] == [READY, LAST_RUN_SUCCEEDED]
    assert patch["conditions"][0]["reason"] == "Paused"


def test_patch_semantics() -> None:
    current: dict[str, Any] = {"state": "ENABLED", "nextRunTime": "x", "identity": {
        "serviceAccountName": "a", "googleServiceAccount": "a@p.iam.gserviceaccount.com"},
        "runs": [{"attemptTime": "t"}], "lastRunRequest": "r1"}
    desired = {"state": "PAUSED", "nextRunTime": None, "identity": {"serviceAccountName": "b"},
               "runs": [{"attemptTime": "t"}], "jobName": None}
    assert status_patch(current, desired) == {
        "state": "PAUSED",
        "nextRunTime": None,  # removed
        "identity": {"serviceAccountName": "b", "googleServiceAccount": None},
        # runs unchanged, lastRunRequest not ours to touch, jobName absent both sides
    }
    assert status_patch(None, {"state": "ENABLED"}) == {"state": "ENABLED"}


# -- runs --

def run(minute: int, result: RunResult = RunResult.SUCCEEDED, **kw: Any) -> RunRecord:
    return RunRecord(attempt_time=at(minute), result=result, **kw)


def test_runs_newest_first_trimmed_and_deduplicated() -> None:
    runs: list[dict[str, Any]] = []
    for minute in (5, 1, 3, 4, 2):
        runs = merge_runs(runs, run(minute), history_limit=3)
    assert [r["attemptTime"] for r in runs] == [format_time(at(m)) for m in (5, 4, 3)]
    # The same attempt seen again (e.g. the relay adding its operation) replaces it.
    op = OperationRecord("operations/1", done=False)
    runs = merge_runs(runs, run(4, RunResult.RUNNING, operation=op), history_limit=3)
    assert len(runs) == 3
    assert runs[1] == {"attemptTime": format_time(at(4)), "result": "Running",
                       "operation": {"name": "operations/1", "done": False}}
    assert merge_runs(runs, run(6), history_limit=0) == []


def test_run_record_to_status_has_every_field() -> None:
    record = RunRecord(
        attempt_time=at(1), result=RunResult.FAILED, schedule_time=at(0), finish_time=at(2),
        code=9, http_status=400, message="bad",
        operation=OperationRecord("op", True, error_code=3, error_message="no",
                                  response={"k": "v"}),
    )
    assert record.to_status() == {
        "scheduleTime": "2026-11-22T09:00:00Z", "attemptTime": "2026-11-22T09:01:00Z",
        "finishTime": "2026-11-22T09:02:00Z", "result": "Failed", "code": 9,
        "httpStatus": 400, "message": "bad",
        "operation": {"name": "op", "done": True, "error": {"code": 3, "message": "no"},
                      "response": {"k": "v"}},
    }


def test_run_from_job() -> None:
    job = ObservedJob("projects/p/locations/l/jobs/j", "ENABLED")
    assert run_from_job(job) is None
    ok = ObservedJob("j", "ENABLED", last_attempt_time=at(5), status_code=0)
    record = run_from_job(ok, schedule_time=at(5))
    assert record == RunRecord(attempt_time=at(5), result=RunResult.SUCCEEDED,
                               schedule_time=at(5), code=0)
    failed = ObservedJob("j", "ENABLED", last_attempt_time=at(5), status_code=7,
                         status_message="caller lacks compute.instanceGroupManagers.update")
    record = run_from_job(failed, target_host="compute.googleapis.com", schedule_time=at(9))
    assert record is not None
    assert record.result is RunResult.FAILED
    assert record.code == 7
    assert record.schedule_time is None  # a schedule time after the attempt is not its own
    assert record.message == ("PERMISSION_DENIED from compute.googleapis.com: "
                              "caller lacks compute.instanceGroupManagers.update")
    no_status = ObservedJob("j", "ENABLED", last_attempt_time=at(5))
    assert run_from_job(no_status) == RunRecord(at(5), RunResult.SUCCEEDED, code=0)


def test_last_run_condition_reasons() -> None:
    def cond(**entry: Any) -> tuple[str, str]:
        c = last_run_condition({"attemptTime": "t", **entry})
        return c.status.value, c.reason

    assert (last_run_condition(None).status, last_run_condition(None).reason) == (
        ConditionStatus.UNKNOWN, "NoRunYet")
    assert cond(result="Succeeded", code=0) == ("True", "Succeeded")
    assert cond(result="Failed", code=7) == ("False", "TargetError")
    assert cond(result="Failed", code=4) == ("False", "DeadlineExceeded")
    assert cond(result="Failed", code=0, operation={"name": "o", "done": True,
                                                    "error": {"code": 3}}) == (
        "False", "OperationFailed")
    assert cond(result="Running", operation={"name": "o", "done": False}) == (
        "Unknown", "OperationRunning")
    assert cond(result="Unknown", code=4) == ("Unknown", "DeadlineExceeded")
    message = last_run_condition({"result": "Failed", "code": 7, "message": "HTTP 403"}).message
    assert message == "HTTP 403"


def sgc(status: dict[str, Any] | None, *parts: Any, relay: bool = False,
        now: datetime = T0) -> dict[str, Any]:
    return apply_parts("ScheduledGcpCall", relay, status or {}, parts, now)[0]


def test_reconcile_and_sync_parts() -> None:
    ready = ready_condition(ReadyReason.UP_TO_DATE)
    current = sgc(None, reconciler_part(
        ready, generation=2, identity={"googleServiceAccount": "r@p.iam.gserviceaccount.com"}),
        lambda st: runs_part(Owner.SYNC, st, None, 10))
    assert current["observedGeneration"] == 2
    assert find_condition(current["conditions"], LAST_RUN_SUCCEEDED) == {
        "type": LAST_RUN_SUCCEEDED, "status": "Unknown", "reason": "NoRunYet",
        "message": "no run observed yet", "lastTransitionTime": "2026-11-22T09:00:00Z",
        "observedGeneration": 2}
    job = ObservedJob("projects/p/locations/l/jobs/j", "ENABLED", next_run_time=at(65),
                      last_attempt_time=at(5), status_code=14, status_message="")
    synced = sgc(current, reconciler_part(None, job_name=job.name), job_part(job),
                 lambda st: runs_part(Owner.SYNC, st, run_from_job(job, target_host="h"), 2),
                 now=at(6))
    patch = status_patch(current, synced)
    assert patch["jobName"] == "projects/p/locations/l/jobs/j"
    assert patch["state"] == "ENABLED"
    assert patch["nextRunTime"] == "2026-11-22T10:05:00Z"
    assert patch["runs"] == [patch["lastRun"]]
    assert patch["lastRun"]["code"] == 14
    last = find_condition(patch["conditions"], LAST_RUN_SUCCEEDED)
    assert last is not None
    assert (last["status"], last["reason"]) == ("False", "TargetError")
    assert last["lastTransitionTime"] == "2026-11-22T09:06:00Z"
    # The sync does not claim a generation it did not observe.
    assert "observedGeneration" not in patch
    # Seeing the same job again changes nothing.
    again = sgc(synced, job_part(job),
                lambda st: runs_part(Owner.SYNC, st, run_from_job(job, target_host="h"), 2),
                now=at(7))
    assert status_patch(synced, again) == {}


def test_each_owner_writes_only_its_own_fields() -> None:
    job = ObservedJob("projects/p/locations/l/jobs/j", "ENABLED")
    with pytest.raises(OwnershipError, match="sync does not own Ready"):
        sgc(None, Part(Owner.SYNC, {}, (ready_condition(ReadyReason.UP_TO_DATE),)))
    with pytest.raises(OwnershipError, match="reconciler does not own state"):
        sgc(None, Part(Owner.RECONCILER, {"state": "ENABLED"}))
    # With Relay delivery the relay records the runs, and the sync may not.
    with pytest.raises(OwnershipError, match="sync does not own LastRunSucceeded, lastRun"):
        sgc(None, lambda st: runs_part(Owner.SYNC, st, None, 10), relay=True)
    with pytest.raises(OwnershipError, match="relay does not own"):
        sgc(None, lambda st: runs_part(Owner.RELAY, st, None, 10), relay=False)
    relayed = sgc(None, job_part(job), lambda st: runs_part(Owner.RELAY, st, None, 10),
                  relay=True)
    assert relayed["state"] == "ENABLED"


def test_lowering_history_limit_trims_existing_runs() -> None:
    runs: list[dict[str, Any]] = []
    for minute in range(5):
        runs = merge_runs(runs, run(minute), 10)
    status = sgc({"runs": runs}, lambda st: runs_part(Owner.SYNC, st, None, 2), now=at(9))
    assert [r["attemptTime"] for r in status["runs"]] == [format_time(at(4)), format_time(at(3))]
    assert status["lastRun"] == status["runs"][0]


def test_history_limit_zero_keeps_no_list_but_the_newest_run() -> None:
    """historyLimit 0: `runs` stays empty, while lastRun and LastRunSucceeded still say how
    the newest run went, and that run is still found (the relay's at-most-once lookup)."""
    status = sgc({}, lambda st: runs_part(Owner.SYNC, st, run(1), 0), now=at(2))
    assert "runs" not in status
    assert status["lastRun"]["attemptTime"] == format_time(at(1))
    assert find_condition(status["conditions"], "LastRunSucceeded")["reason"] == "Succeeded"
    assert recorded_runs(status) == [status["lastRun"]]
    later = sgc(status, lambda st: runs_part(Owner.SYNC, st, run(3, RunResult.FAILED), 0),
                now=at(4))
    assert "runs" not in later
    assert later["lastRun"]["attemptTime"] == format_time(at(3))
    assert find_condition(later["conditions"], "LastRunSucceeded")["status"] == "False"
    # lowering the limit to 0 empties the list and keeps lastRun
    runs = merge_runs([], run(5), 10)
    lowered = sgc({"runs": runs, "lastRun": runs[0]},
                  lambda st: runs_part(Owner.SYNC, st, None, 0), now=at(6))
    assert "runs" not in lowered
    assert lowered["lastRun"] == runs[0]


def test_recorded_runs_does_not_repeat_last_run() -> None:
    runs = merge_runs(merge_runs([], run(1), 10), run(2), 10)
    assert recorded_runs({"runs": runs, "lastRun": runs[0]}) == runs
    assert recorded_runs({}) == []


def test_last_run_request_is_echoed() -> None:
    status = sgc({}, reconciler_part(None, last_run_request="2026-11-22T09:58:00Z"))
    assert status["lastRunRequest"] == "2026-11-22T09:58:00Z"
    assert "conditions" not in status
