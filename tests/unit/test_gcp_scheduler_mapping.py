"""Spec -> Cloud Scheduler Job, and the update mask from diffing desired against actual.

The mask is checked the way the server applies it: merging the desired job into the actual
one through the mask (protobuf's FieldMask.MergeMessage, the standard semantics) must give
back the desired job, and a no-op must give an empty mask.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.cloud import scheduler_v1
from google.protobuf import field_mask_pb2
from google.rpc import status_pb2

from gcpcall.api.common import RelayTarget
from gcpcall.api.errors import InvalidSpec
from gcpcall.api.naming import job_description, job_name
from gcpcall.api.scheduled_call import ScheduledCallSpec, parse_scheduled_call
from gcpcall.gcp.scheduler_mapping import actual_headers, desired_job, observed_job, update_mask
from tests.unit._specs import COMPUTE_URI, DEFAULTS, call_spec, with_target

NAME = job_name("my-project", "europe-west3", "prod", "team-a", "scale-up")
DESCRIPTION = job_description("scale up", "prod", "team-a", "scale-up")
IDENTITY = "team-a@my-project.iam.gserviceaccount.com"


def parse(spec: dict[str, Any]) -> ScheduledCallSpec:
    return parse_scheduled_call(spec, DEFAULTS)


def job_for(spec: dict[str, Any], **kw: Any) -> scheduler_v1.Job:
    return desired_job(parse(spec), NAME, DESCRIPTION, IDENTITY, **kw)


def apply_mask(actual: scheduler_v1.Job, desired: scheduler_v1.Job,
               mask: list[str]) -> scheduler_v1.Job:
    merged = scheduler_v1.Job.pb(actual).__deepcopy__()
    field_mask_pb2.FieldMask(paths=mask).MergeMessage(
        scheduler_v1.Job.pb(desired), merged, replace_message_field=True,
        replace_repeated_field=True)
    return scheduler_v1.Job.wrap(merged)


def test_every_field_is_mapped() -> None:
    spec = call_spec(
        schedule="0 9 * * 1-5", timeZone="Europe/Berlin",
        retry={"retryCount": 3, "maxRetryDurationSeconds": 600, "minBackoffSeconds": 10,
               "maxBackoffSeconds": 300, "maxDoublings": 2},
        attemptDeadlineSeconds=900,
    )
    job = job_for(spec)
    assert job.name == NAME
    assert job.description == DESCRIPTION
    assert job.schedule == "0 9 * * 1-5"
    assert job.time_zone == "Europe/Berlin"
    http = job.http_target
    assert http.uri == COMPUTE_URI
    assert http.http_method == scheduler_v1.HttpMethod.POST
    assert dict(http.headers) == {"Content-Type": "application/json"}
    assert http.body == b'{"a":[1,2],"b":1}'
    assert http.oauth_token.service_account_email == "runner@my-project.iam.gserviceaccount.com"
    assert http.oauth_token.scope == "https://www.googleapis.com/auth/cloud-platform"
    assert "oidc_token" not in http
    r = job.retry_config
    assert (r.retry_count, r.max_retry_duration, r.min_backoff_duration,
            r.max_backoff_duration, r.max_doublings) == (
        3, timedelta(seconds=600), timedelta(seconds=10), timedelta(seconds=300), 2)
    assert job.attempt_deadline == timedelta(seconds=900)
    # Output-only and state fields are left to Google.
    assert job.state == scheduler_v1.Job.State.STATE_UNSPECIFIED
    assert "schedule_time" not in job
    assert "status" not in job


def test_defaults_are_explicit_in_the_job() -> None:
    job = job_for({"schedule": "* * * * *", "target": {"uri": "https://example.com/x"}})
    assert job.time_zone == "Etc/UTC"
    assert job.attempt_deadline == timedelta(seconds=180)
    assert "retry_config" in job
    assert job.retry_config.min_backoff_duration == timedelta(seconds=5)
    assert job.retry_config.max_backoff_duration == timedelta(seconds=3600)
    assert job.retry_config.max_doublings == 5
    assert "oauth_token" not in job.http_target
    assert "oidc_token" not in job.http_target
    assert job.http_target.body == b""


def test_identity_is_the_default_token_account() -> None:
    job = job_for(with_target(call_spec(), auth={"oidc": {"audience": "aud"}}))
    assert job.http_target.oidc_token.service_account_email == IDENTITY
    assert job.http_target.oidc_token.audience == "aud"
    with pytest.raises(InvalidSpec) as info:
        desired_job(parse(with_target(call_spec(), auth={"oauth": {}})), NAME, DESCRIPTION, None)
    assert info.value.field == "spec.target.auth.serviceAccountEmail"


def test_reference_body_must_be_resolved() -> None:
    spec = with_target(call_spec(), body={"fromSecret": {"name": "s", "key": "k"}})
    assert job_for(spec, body=b"secret-body").http_target.body == b"secret-body"
    with pytest.raises(ValueError, match="resolve"):
        job_for(spec)


def test_relay_delivery_targets_the_relay() -> None:
    relay = RelayTarget(url="https://relay.example.com/run", body=b'{"uid":"u"}')
    job = job_for(call_spec(delivery="Relay"), relay=relay)
    http = job.http_target
    assert (http.uri, http.http_method, http.body) == (
        "https://relay.example.com/run", scheduler_v1.HttpMethod.POST, b'{"uid":"u"}')
    assert dict(http.headers) == {"Content-Type": "application/json"}
    assert http.oidc_token.service_account_email == IDENTITY
    assert http.oidc_token.audience == "https://relay.example.com/run"
    assert "oauth_token" not in http


def test_no_op_diff_is_empty_even_with_google_filled_fields() -> None:
    desired = job_for(call_spec())
    actual = scheduler_v1.Job.wrap(scheduler_v1.Job.pb(desired).__deepcopy__())
    # What Google adds on read: output-only fields and its own headers.
    actual.state = scheduler_v1.Job.State.ENABLED
    actual.schedule_time = datetime(2026, 11, 22, 10, 5, tzinfo=UTC)
    actual.last_attempt_time = datetime(2026, 11, 22, 9, 5, tzinfo=UTC)
    actual.user_update_time = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
    scheduler_v1.Job.pb(actual).status.CopyFrom(status_pb2.Status(code=7, message="denied"))
    actual.http_target.headers["User-Agent"] = "Google-Cloud-Scheduler"
    actual.http_target.headers["X-CloudScheduler"] = "true"
    assert update_mask(desired, actual) == []


CHANGES: list[tuple[dict[str, Any], list[str]]] = [
    ({"schedule": "10 * * * *"}, ["schedule"]),
    ({"timeZone": "Europe/Berlin"}, ["time_zone"]),
    ({"target": {"uri": COMPUTE_URI, "method": "PUT", "headers": [
        {"name": "Content-Type", "value": "application/json"}], "body": {"json": {"b": 1,
        "a": [1, 2]}}, "auth": {"oauth": {}, "serviceAccountEmail":
        "runner@my-project.iam.gserviceaccount.com"}}}, ["http_target.http_method"]),
    ({"retry": {"retryCount": 2}}, ["retry_config.retry_count"]),
    ({"retry": {"maxRetryDurationSeconds": 60}}, ["retry_config.max_retry_duration"]),
    ({"retry": {"minBackoffSeconds": 1}}, ["retry_config.min_backoff_duration"]),
    ({"retry": {"maxBackoffSeconds": 60}}, ["retry_config.max_backoff_duration"]),
    ({"retry": {"maxDoublings": 1}}, ["retry_config.max_doublings"]),
    ({"attemptDeadlineSeconds": 30}, ["attempt_deadline"]),
]


@pytest.mark.parametrize(("change", "expected"), CHANGES)
def test_single_field_diffs(change: dict[str, Any], expected: list[str]) -> None:
    actual = job_for(call_spec())
    desired = job_for(call_spec(**change))
    mask = update_mask(desired, actual)
    assert mask == expected
    assert update_mask(desired, apply_mask(actual, desired, mask)) == []


TARGET_CHANGES: list[tuple[dict[str, Any], list[str]]] = [
    ({"uri": COMPUTE_URI + "&x=1"}, ["http_target.uri"]),
    ({"headers": [{"name": "Content-Type", "value": "text/plain"}]}, ["http_target.headers"]),
    ({"headers": None}, ["http_target.headers"]),
    ({"body": {"json": {"a": 2}}}, ["http_target.body"]),
    ({"body": None}, ["http_target.body"]),
    ({"auth": {"oauth": {"scope": "https://www.googleapis.com/auth/compute"},
               "serviceAccountEmail": "runner@my-project.iam.gserviceaccount.com"}},
     ["http_target.oauth_token"]),
    ({"auth": {"oauth": {}}}, ["http_target.oauth_token"]),
    ({"auth": {"oidc": {}}}, ["http_target.oidc_token"]),
    ({"auth": None}, ["http_target.oauth_token"]),
]


@pytest.mark.parametrize(("change", "expected"), TARGET_CHANGES)
def test_target_diffs_round_trip(change: dict[str, Any], expected: list[str]) -> None:
    actual = job_for(call_spec())
    desired = job_for(with_target(call_spec(), **change))
    mask = update_mask(desired, actual)
    assert mask == expected
    merged = apply_mask(actual, desired, mask)
    assert update_mask(desired, merged) == []
    assert merged == desired


def test_switching_oidc_to_oauth_and_description_and_everything() -> None:
    actual = job_for(with_target(call_spec(), auth={"oidc": {"audience": "a"}}))
    desired = desired_job(
        parse(call_spec(schedule="1 1 * * *", retry={"retryCount": 1})), NAME,
        job_description("other text", "prod", "team-a", "scale-up"), IDENTITY)
    mask = update_mask(desired, actual)
    assert mask[:2] == ["description", "schedule"]
    assert "http_target.oauth_token" in mask
    assert not any(p.startswith("http_target.oidc_token") for p in mask)
    assert apply_mask(actual, desired, mask) == desired


def test_a_job_changed_to_another_target_type_is_restored() -> None:
    desired = job_for(call_spec())
    actual = scheduler_v1.Job(name=NAME, description=DESCRIPTION, schedule="5 * * * *",
                              time_zone="Etc/UTC",
                              pubsub_target=scheduler_v1.PubsubTarget(topic_name="t"))
    merged = apply_mask(actual, desired, update_mask(desired, actual))
    assert update_mask(desired, merged) == []
    assert "pubsub_target" not in merged


def test_an_emptied_token_is_no_token() -> None:
    """A server that clears a token by emptying its fields leaves no drift behind."""
    desired = job_for(with_target(call_spec(), auth=None))
    actual = job_for(with_target(call_spec(), auth=None))
    actual.http_target.oauth_token = scheduler_v1.OAuthToken(scope="s")
    assert "oauth_token" in actual.http_target
    assert update_mask(desired, actual) == []


def test_actual_headers_normalization() -> None:
    google = {"User-Agent": "Google-Cloud-Scheduler", "Content-Type": "application/octet-stream",
              "X-Google-Trace": "t", "Content-Length": "3", "X-AppEngine-Foo": "x",
              "X-Team": "a"}
    assert actual_headers(google, {}) == {"x-team": "a"}
    # A header the user set to Google's default value is compared, not dropped.
    assert actual_headers(google, {"content-type": "application/octet-stream"}) == {
        "content-type": "application/octet-stream", "x-team": "a"}


def test_observed_job_reader() -> None:
    job = job_for(call_spec())
    assert observed_job(job) == replace(observed_job(job))  # plain and frozen
    empty = observed_job(job)
    assert (empty.name, empty.state, empty.description) == (NAME, "STATE_UNSPECIFIED", DESCRIPTION)
    assert empty.next_run_time is None
    assert empty.last_attempt_time is None
    assert empty.status_code is None
    assert empty.status_message == ""
    job.state = scheduler_v1.Job.State.PAUSED
    job.schedule_time = datetime(2026, 11, 22, 10, 5, tzinfo=UTC)
    job.last_attempt_time = datetime(2026, 11, 22, 9, 5, 0, 500000, tzinfo=UTC)
    scheduler_v1.Job.pb(job).status.CopyFrom(status_pb2.Status(code=14, message="down"))
    seen = observed_job(job)
    assert seen.state == "PAUSED"
    assert seen.next_run_time == datetime(2026, 11, 22, 10, 5, tzinfo=UTC)
    assert type(seen.next_run_time) is datetime
    assert seen.last_attempt_time == datetime(2026, 11, 22, 9, 5, 0, 500000, tzinfo=UTC)
    assert (seen.status_code, seen.status_message) == (14, "down")
    scheduler_v1.Job.pb(job).status.CopyFrom(status_pb2.Status(code=0))
    assert observed_job(job).status_code == 0
