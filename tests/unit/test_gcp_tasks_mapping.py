"""Spec -> Cloud Tasks Task (created once, so every field must be right), and the readers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from google.cloud import tasks_v2
from google.rpc import status_pb2

from gcpcall.api.common import RelayTarget
from gcpcall.api.gcp_task import GcpTaskSpec, parse_gcp_task
from gcpcall.api.naming import task_name
from gcpcall.api.observed import ObservedAttempt, ObservedQueue, ObservedTask
from gcpcall.gcp.tasks_mapping import desired_task, observed_queue, observed_task
from tests.unit._specs import DEFAULTS, NOW, task_spec, with_target

NAME = task_name("my-project", "europe-west3", "etl", "prod", "team-a", "launch", "uid-1")
IDENTITY = "team-a@my-project.iam.gserviceaccount.com"


def parse(spec: dict[str, Any]) -> GcpTaskSpec:
    return parse_gcp_task(spec, DEFAULTS)


def test_every_field_is_mapped() -> None:
    spec = with_target(
        task_spec(scheduleTime="2026-11-22T12:00:00Z", dispatchDeadlineSeconds=900),
        uri="https://dataflow.googleapis.com/v1b3/projects/p/templates:launch",
        method="PUT", headers=[{"name": "X-Run", "value": "1"}],
        body={"json": {"jobName": "x"}}, auth={"oauth": {"scope": "s"}},
    )
    task = desired_task(parse(spec), NAME, IDENTITY, NOW)
    assert task.name == NAME
    http = task.http_request
    assert http.url == "https://dataflow.googleapis.com/v1b3/projects/p/templates:launch"
    assert http.http_method == tasks_v2.HttpMethod.PUT
    assert dict(http.headers) == {"X-Run": "1"}
    assert http.body == b'{"jobName":"x"}'
    assert (http.oauth_token.service_account_email, http.oauth_token.scope) == (IDENTITY, "s")
    assert "oidc_token" not in http
    assert task.schedule_time == datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    assert task.dispatch_deadline == timedelta(seconds=900)
    # Output-only fields are Google's.
    assert task.dispatch_count == 0
    assert "create_time" not in task


def test_oidc_defaults_and_no_schedule_time() -> None:
    task = desired_task(parse(task_spec()), NAME, IDENTITY, NOW)
    assert task.http_request.oidc_token.service_account_email == IDENTITY
    assert task.http_request.oidc_token.audience == "https://run.example.com/launch"
    assert task.http_request.http_method == tasks_v2.HttpMethod.POST
    assert "schedule_time" not in task  # dispatch as soon as possible
    assert task.dispatch_deadline == timedelta(seconds=600)


def test_delay_is_anchored_on_the_given_time() -> None:
    created = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
    task = desired_task(parse(task_spec(delaySeconds=300)), NAME, IDENTITY, created)
    assert task.schedule_time == created + timedelta(seconds=300)
    again = desired_task(parse(task_spec(delaySeconds=300)), NAME, IDENTITY, created)
    assert again == task  # a retried create asks for the very same task


def test_unauthenticated_task_and_text_body() -> None:
    spec = with_target(task_spec(), auth=None, body={"text": "hello"})
    http = desired_task(parse(spec), NAME, None, NOW).http_request
    assert "oauth_token" not in http
    assert "oidc_token" not in http
    assert http.body == b"hello"


def test_relay_delivery() -> None:
    relay = RelayTarget(url="https://relay.example.com/task", body=b"{}", audience="relay")
    task = desired_task(parse(task_spec(delivery="Relay")), NAME, IDENTITY, NOW, relay=relay)
    assert task.http_request.url == "https://relay.example.com/task"
    assert task.http_request.oidc_token.audience == "relay"
    assert task.http_request.oidc_token.service_account_email == IDENTITY


def _attempt(dispatch: int, code: int | None = None) -> tasks_v2.Attempt:
    attempt = tasks_v2.Attempt(schedule_time=NOW, dispatch_time=NOW + timedelta(seconds=dispatch))
    if code is not None:
        attempt.response_time = NOW + timedelta(seconds=dispatch + 1)
        tasks_v2.Attempt.pb(attempt).response_status.CopyFrom(
            status_pb2.Status(code=code, message="Service Unavailable" if code else ""))
    return attempt


def test_observed_task_reader() -> None:
    fresh = tasks_v2.Task(name=NAME, schedule_time=NOW, create_time=NOW)
    assert observed_task(fresh) == ObservedTask(NAME, schedule_time=NOW, create_time=NOW)
    task = tasks_v2.Task(name=NAME, schedule_time=NOW, dispatch_count=2, response_count=1,
                         first_attempt=tasks_v2.Attempt(dispatch_time=NOW),
                         last_attempt=_attempt(10, code=14))
    seen = observed_task(task)
    assert (seen.dispatch_count, seen.response_count, seen.first_attempt_time) == (2, 1, NOW)
    assert seen.last_attempt == ObservedAttempt(
        dispatch_time=NOW + timedelta(seconds=10), schedule_time=NOW,
        response_time=NOW + timedelta(seconds=11), code=14, message="Service Unavailable")
    in_flight = observed_task(tasks_v2.Task(name=NAME, last_attempt=_attempt(5)))
    assert in_flight.last_attempt is not None
    assert in_flight.last_attempt.code is None
    ok = observed_task(tasks_v2.Task(name=NAME, last_attempt=_attempt(5, code=0)))
    assert ok.last_attempt is not None
    assert ok.last_attempt.code == 0


def test_observed_queue_reader() -> None:
    running = tasks_v2.Queue(name="q", state=tasks_v2.Queue.State.RUNNING,
                             retry_config=tasks_v2.RetryConfig(max_attempts=3))
    assert observed_queue(running) == ObservedQueue("q", paused=False)
    paused = tasks_v2.Queue(name="q", state=tasks_v2.Queue.State.PAUSED,
                            retry_config=tasks_v2.RetryConfig(max_attempts=-1))
    assert observed_queue(paused) == ObservedQueue("q", paused=True)
    assert observed_queue(tasks_v2.Queue(name="q")) == ObservedQueue("q")
