"""Cloud Scheduler's stated rules, checked as pure functions.

Why: the retry interval sequence, the job id syntax and the cron-in-a-time-zone rules
are stated precisely in the API reference; checking them directly covers cases (long
retry sequences, daylight-saving changes) that would be slow or awkward through a run.
"""

from __future__ import annotations

import datetime
import zoneinfo

import grpc
import pytest
from croniter import croniter

from gcpcall.emulator.scheduler_rules import (
    InvalidArgument,
    RetryPolicy,
    code_for_http_status,
    cron_next,
    cron_previous,
    parse_job_name,
    time_zone,
    validate_schedule,
)

UTC = datetime.UTC


def test_backoff_follows_the_reference_example() -> None:
    """min 10s, max 300s, 3 doublings: 10, 20, 40, 80, 160, 240, 300, 300 seconds."""
    policy = RetryPolicy(retry_count=5, min_backoff=10, max_backoff=300, max_doublings=3)
    assert [policy.backoff(n) for n in range(8)] == [10, 20, 40, 80, 160, 240, 300, 300]


def test_backoff_defaults() -> None:
    policy = RetryPolicy(retry_count=5)
    assert [policy.backoff(n) for n in range(7)] == [5, 10, 20, 40, 80, 160, 320]
    assert policy.backoff(20) == 160 * 16  # linear growth after the doublings
    assert policy.backoff(30) == 3600  # capped at max_backoff


def test_retry_limits() -> None:
    assert not RetryPolicy(retry_count=0, max_retry_duration=100).may_retry(0, 0)
    counted = RetryPolicy(retry_count=2)
    assert [counted.may_retry(n, 10_000) for n in range(4)] == [True, True, False, False]
    # with both limits set, retrying goes on until both are reached
    both = RetryPolicy(retry_count=1, max_retry_duration=60)
    assert both.may_retry(3, 59)
    assert not both.may_retry(3, 60)
    assert both.may_retry(0, 600)


@pytest.mark.parametrize(
    "policy",
    [
        RetryPolicy(retry_count=6),
        RetryPolicy(min_backoff=10, max_backoff=5),
        RetryPolicy(max_retry_duration=-1),
        RetryPolicy(attempt_deadline=14.9),
        RetryPolicy(attempt_deadline=1800.1),
    ],
)
def test_invalid_retry_settings(policy: RetryPolicy) -> None:
    with pytest.raises(InvalidArgument):
        policy.validate()


def test_job_names() -> None:
    name = parse_job_name("projects/my-proj:x.y/locations/europe-west1/jobs/a_B-9")
    assert (name.project, name.location, name.job_id) == ("my-proj:x.y", "europe-west1", "a_B-9")
    assert name.parent == "projects/my-proj:x.y/locations/europe-west1"
    assert str(name) == "projects/my-proj:x.y/locations/europe-west1/jobs/a_B-9"
    for bad in ("projects/p/locations/l/jobs/", "projects/p/jobs/j", "p/l/j", "x" * 10):
        with pytest.raises(InvalidArgument):
            parse_job_name(bad)


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (200, grpc.StatusCode.OK),
        (299, grpc.StatusCode.OK),
        (301, grpc.StatusCode.UNKNOWN),
        (400, grpc.StatusCode.INVALID_ARGUMENT),
        (401, grpc.StatusCode.UNAUTHENTICATED),
        (403, grpc.StatusCode.PERMISSION_DENIED),
        (404, grpc.StatusCode.NOT_FOUND),
        (409, grpc.StatusCode.ABORTED),
        (418, grpc.StatusCode.FAILED_PRECONDITION),
        (429, grpc.StatusCode.RESOURCE_EXHAUSTED),
        (500, grpc.StatusCode.INTERNAL),
        (501, grpc.StatusCode.UNIMPLEMENTED),
        (503, grpc.StatusCode.UNAVAILABLE),
        (504, grpc.StatusCode.DEADLINE_EXCEEDED),
        (599, grpc.StatusCode.UNKNOWN),
    ],
)
def test_http_status_to_code(status: int, code: grpc.StatusCode) -> None:
    assert code_for_http_status(status) is code


def test_cron_is_read_in_the_job_time_zone_across_daylight_saving() -> None:
    paris = time_zone("Europe/Paris")
    # 2026-03-29: Paris moves from UTC+1 to UTC+2 at 02:00 local time
    before = cron_next("30 9 * * *", paris, datetime.datetime(2026, 3, 28, 12, tzinfo=UTC))
    after = cron_next("30 9 * * *", paris, before)

    assert before == datetime.datetime(2026, 3, 29, 7, 30, tzinfo=UTC)  # 09:30 at UTC+2
    assert after == datetime.datetime(2026, 3, 30, 7, 30, tzinfo=UTC)
    assert cron_next("30 9 * * *", paris, datetime.datetime(2026, 3, 27, 12, tzinfo=UTC)) == (
        datetime.datetime(2026, 3, 28, 8, 30, tzinfo=UTC)  # 09:30 at UTC+1
    )


def test_cron_previous_is_at_or_before() -> None:
    utc = time_zone("")
    at = datetime.datetime(2026, 1, 1, 10, 15, tzinfo=UTC)
    assert cron_previous("*/15 * * * *", utc, at) == at
    assert cron_previous("*/15 * * * *", utc, at + datetime.timedelta(minutes=14)) == at


def test_time_zones() -> None:
    assert time_zone("UTC") == zoneinfo.ZoneInfo("UTC")
    assert time_zone("utc") == zoneinfo.ZoneInfo("UTC")
    assert time_zone("America/Argentina/Buenos_Aires").key == "America/Argentina/Buenos_Aires"
    for bad in ("Nowhere", "Europe/Pariss", "/etc/localtime", "../UTC"):
        with pytest.raises(InvalidArgument):
            time_zone(bad)


@pytest.mark.parametrize(
    "schedule", ["* * * * *", "0 9 * * MON-FRI", "*/10 0-6 1,15 JAN-JUN *", "5 4 * * sun"]
)
def test_valid_schedules(schedule: str) -> None:
    validate_schedule(schedule)  # raises InvalidArgument when refused
    assert croniter.is_valid(schedule)


@pytest.mark.parametrize(
    "schedule", ["@hourly", "every 5 minutes", "* * * * * *", "60 * * * *", "* * 32 * *"]
)
def test_invalid_schedules(schedule: str) -> None:
    with pytest.raises(InvalidArgument):
        validate_schedule(schedule)
