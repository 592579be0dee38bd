"""The relay's pure parts: the envelope it trusts, how attempts are told apart as runs, and
what a call's answer reads as in status."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from gcpcall.api.relay_envelope import EnvelopeError, envelope_body, parse_envelope
from gcpcall.api.relay_runs import (
    MAX_RESPONSE_CHARS,
    CallOutcome,
    find_run,
    outcome_of,
    relay_run,
    run_id,
    schedule_time_header,
    task_attempt,
    task_eta,
    trimmed,
)
from gcpcall.api.status import RunResult, merge_runs

T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
UID = "5f0c6a1e-8d1b-4c4e-9a55-2c3e7b9d0f11"


def test_the_envelope_round_trips_and_is_stable() -> None:
    raw = envelope_body("ScheduledGcpCall", "team-a", "scale-up", UID)
    assert raw == envelope_body("ScheduledGcpCall", "team-a", "scale-up", UID)
    env = parse_envelope(raw)
    assert (env.kind, env.namespace, env.name, env.uid, env.plural) == (
        "ScheduledGcpCall", "team-a", "scale-up", UID, "scheduledgcpcalls")


@pytest.mark.parametrize("raw", [
    b"", b"null", b"[]", b"not json", b"\xff\xfe",
    b'{"apiVersion": "gcpcall.dev/v1alpha1", "kind": "ScheduledGcpCall"}',
    json.dumps({"apiVersion": "gcpcall.dev/v1alpha1", "kind": "ScheduledGcpCall",
                "namespace": "a", "name": "b", "uid": UID, "uri": "https://evil"}).encode(),
    json.dumps({"apiVersion": "v1", "kind": "Secret", "namespace": "a", "name": "b",
                "uid": UID}).encode(),
    json.dumps({"apiVersion": "gcpcall.dev/v1alpha1", "kind": "GcpTask", "namespace": "A/b",
                "name": "b", "uid": UID}).encode(),
    json.dumps({"apiVersion": "gcpcall.dev/v1alpha1", "kind": "GcpTask", "namespace": "a",
                "name": "b", "uid": 7}).encode(),
    b" " * 5000,
])
def test_anything_but_an_envelope_is_refused(raw: bytes) -> None:
    with pytest.raises(EnvelopeError):
        parse_envelope(raw)


def test_schedule_time_and_task_headers_are_parsed_strictly() -> None:
    assert schedule_time_header("2026-11-22T10:05:00+01:00") == T0 + timedelta(minutes=5)
    assert schedule_time_header("2026-11-22T09:00:00Z") == T0
    for bad in (None, "", "yesterday", "2026-11-22 09:00:00", "2026-11-22T09:00:00", "x" * 99):
        assert schedule_time_header(bad) is None
    assert task_eta("1795338000.123456") == datetime.fromtimestamp(1795338000.123456, UTC)
    assert task_eta("-1") is None
    assert task_eta("nan") is None
    assert task_attempt("0") == 1
    assert task_attempt("2") == 3
    assert task_attempt("-1") is None


def test_run_ids_are_stable_per_execution_and_new_per_run() -> None:
    assert run_id(UID, T0) == run_id(UID, T0)
    assert run_id(UID, T0) != run_id(UID, T0 + timedelta(minutes=1))
    assert run_id(UID, T0) != run_id("another-uid", T0)


def test_attempts_of_one_execution_are_one_run() -> None:
    fail = CallOutcome(503, b'{"error": {"code": 503, "message": "backend down"}}')
    first = relay_run(None, uid=UID, schedule_time=T0, now=T0, outcome=fail, host="h.example")
    assert (first.attempts, first.result, first.code, first.http_status) == (
        1, RunResult.FAILED, 14, 503)
    assert first.message == "HTTP 503 UNAVAILABLE from h.example: backend down"
    runs = merge_runs([], first, 10)
    later = T0 + timedelta(seconds=30)
    ok = CallOutcome(200, b'{"done": true}')
    second = relay_run(find_run(runs, T0), uid=UID, schedule_time=T0, now=later, outcome=ok,
                       host="h.example")
    runs = merge_runs(runs, second, 10)
    assert len(runs) == 1
    assert runs[0]["attempts"] == 2
    assert runs[0]["attemptTime"] == "2026-11-22T09:00:00Z"  # the first attempt's
    assert runs[0]["lastAttemptTime"] == "2026-11-22T09:00:30Z"
    assert runs[0]["result"] == "Succeeded"
    assert runs[0]["response"] == '{"done": true}'


def test_runs_of_different_executions_in_one_second_are_kept_apart() -> None:
    ok = CallOutcome(200)
    runs: list[dict[str, object]] = []
    for minute in range(3):
        record = relay_run(None, uid=UID, schedule_time=T0 + timedelta(minutes=minute), now=T0,
                           outcome=ok, host="h")
        runs = merge_runs(runs, record, 10)
    assert len(runs) == 3
    assert [r["scheduleTime"] for r in runs] == [
        "2026-11-22T09:02:00Z", "2026-11-22T09:01:00Z", "2026-11-22T09:00:00Z"]


def test_no_answer_reads_as_unavailable_or_deadline() -> None:
    assert outcome_of(CallOutcome(None, error="refused"), "h")[1:] == (
        14, "UNAVAILABLE from h: refused")
    timed_out = CallOutcome(None, error="no answer within 175 s", timed_out=True)
    assert outcome_of(timed_out, "h")[1] == 4


def test_a_response_is_trimmed_and_printable() -> None:
    text = trimmed(b"\x00\x01ok" + b"x" * 10000)
    assert len(text) <= MAX_RESPONSE_CHARS
    assert text.startswith("??ok")
    assert text.endswith("[trimmed]")
