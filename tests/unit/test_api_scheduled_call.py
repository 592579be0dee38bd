"""ScheduledGcpCall spec parsing: defaults, and every rule the CRD schema cannot check."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from gcpcall.api.common import DeletionPolicy, Delivery, OperationPolicy
from gcpcall.api.errors import InvalidSpec
from gcpcall.api.placement import Placement, resolve_placement
from gcpcall.api.scheduled_call import RetryPolicy, parse_scheduled_call
from tests.unit._specs import DEFAULTS, call_spec


def invalid_field(spec: dict[str, Any], **ctx: Any) -> str:
    with pytest.raises(InvalidSpec) as info:
        parse_scheduled_call(spec, replace(DEFAULTS, **ctx))
    assert info.value.message
    return info.value.field


def test_minimal_spec_gets_every_default() -> None:
    spec = {"schedule": "*/5 * * * *", "target": {"uri": "https://example.com/hook"}}
    parsed = parse_scheduled_call(spec, DEFAULTS)
    assert parsed.schedule == "*/5 * * * *"
    assert parsed.time_zone == "Etc/UTC"
    assert parsed.paused is False
    assert parsed.description == ""
    assert (parsed.project, parsed.location) == ("operator-project", "us-central1")
    assert parsed.service_account_name is None
    assert parsed.retry == RetryPolicy(0, 0, 5, 3600, 5)
    assert parsed.attempt_deadline_seconds == 180
    assert parsed.delivery is Delivery.DIRECT
    assert parsed.operation is None
    assert parsed.history_limit == 10
    assert parsed.deletion_policy is DeletionPolicy.DELETE
    assert parsed.target.auth is None
    assert parsed.target.body is None


def test_every_field_is_read() -> None:
    spec = call_spec(
        timeZone="Europe/Berlin", paused=True, description="scale up", serviceAccountName="runner",
        retry={"retryCount": 3, "maxRetryDurationSeconds": 600, "minBackoffSeconds": 10,
               "maxBackoffSeconds": 300, "maxDoublings": 2},
        attemptDeadlineSeconds=900, delivery="Relay",
        operation={"follow": False, "timeoutSeconds": 60}, historyLimit=0,
        deletionPolicy="Abandon",
    )
    parsed = parse_scheduled_call(spec, DEFAULTS)
    assert parsed.time_zone == "Europe/Berlin"
    assert parsed.paused is True
    assert parsed.description == "scale up"
    assert (parsed.project, parsed.location) == ("my-project", "europe-west3")
    assert parsed.service_account_name == "runner"
    assert parsed.retry == RetryPolicy(3, 600, 10, 300, 2)
    assert parsed.attempt_deadline_seconds == 900
    assert parsed.delivery is Delivery.RELAY
    assert parsed.operation == OperationPolicy(follow=False, timeout_seconds=60)
    assert parsed.history_limit == 0
    assert parsed.deletion_policy is DeletionPolicy.ABANDON


def test_operation_defaults_with_relay() -> None:
    parsed = parse_scheduled_call(call_spec(delivery="Relay", operation={}), DEFAULTS)
    assert parsed.operation == OperationPolicy(follow=True, timeout_seconds=3600)


@pytest.mark.parametrize(
    "schedule",
    ["0 9 * * 1-5", "*/15 * * * *", "0 0 1 JAN,jul *", "30 2 * * MON-FRI", "0 0 * * 7",
     "5,10 1-3/2 * * *"],
)
def test_valid_schedules(schedule: str) -> None:
    assert parse_scheduled_call(call_spec(schedule=schedule), DEFAULTS).schedule == schedule


@pytest.mark.parametrize(
    "schedule",
    ["* * * *", "* * * * * *", "@hourly", "every 5 minutes", "60 * * * *", "0 24 * * *",
     "0 0 L * *", "0 0 * * 5#3", "0 0 ? * *", "H * * * *", "*/0 * * * *", "0 0 32 * *",
     "0 0 * 13 *", "0 0 * JAN-FOO *", "0 0 * * SUNDAY", "1-60/5 * * * *", "   "],
)
def test_invalid_schedules(schedule: str) -> None:
    assert invalid_field(call_spec(schedule=schedule)) == "spec.schedule"


def test_schedule_is_required() -> None:
    spec = call_spec()
    del spec["schedule"]
    assert invalid_field(spec) == "spec.schedule"


@pytest.mark.parametrize("tz", ["Europe/Berlin", "America/Argentina/Buenos_Aires", "UTC",
                                "Etc/UTC", "Asia/Kolkata"])
def test_valid_time_zones(tz: str) -> None:
    assert parse_scheduled_call(call_spec(timeZone=tz), DEFAULTS).time_zone == tz


@pytest.mark.parametrize("tz", ["Europe/Atlantis", "CEST", "posixrules", "../etc/passwd",
                                "/usr/share/zoneinfo/UTC", "Europe/berlin"])
def test_invalid_time_zones(tz: str) -> None:
    assert invalid_field(call_spec(timeZone=tz)) == "spec.timeZone"


@pytest.mark.parametrize(
    ("retry", "field"),
    [
        ({"retryCount": 6}, "spec.retry.retryCount"),
        ({"retryCount": -1}, "spec.retry.retryCount"),
        ({"retryCount": True}, "spec.retry.retryCount"),
        ({"maxRetryDurationSeconds": -1}, "spec.retry.maxRetryDurationSeconds"),
        ({"minBackoffSeconds": -5}, "spec.retry.minBackoffSeconds"),
        ({"minBackoffSeconds": 100, "maxBackoffSeconds": 50}, "spec.retry.minBackoffSeconds"),
        ({"minBackoffSeconds": 7200}, "spec.retry.minBackoffSeconds"),
        ({"maxBackoffSeconds": 1}, "spec.retry.maxBackoffSeconds"),
        ({"maxDoublings": -1}, "spec.retry.maxDoublings"),
        ({"maxDoublings": "5"}, "spec.retry.maxDoublings"),
        ({"maxDoublings": 0}, "spec.retry.maxDoublings"),
    ],
)
def test_retry_ranges(retry: dict[str, Any], field: str) -> None:
    assert invalid_field(call_spec(retry=retry)) == field


def test_retry_edges_pass() -> None:
    parsed = parse_scheduled_call(
        call_spec(retry={"retryCount": 5, "minBackoffSeconds": 0, "maxBackoffSeconds": 0}),
        DEFAULTS)
    assert parsed.retry == RetryPolicy(5, 0, 0, 0, 5)


@pytest.mark.parametrize("value", [14, 1801, -1, 1.5])
def test_attempt_deadline_range(value: Any) -> None:
    assert invalid_field(call_spec(attemptDeadlineSeconds=value)) == "spec.attemptDeadlineSeconds"


@pytest.mark.parametrize("value", [15, 1800])
def test_attempt_deadline_edges(value: int) -> None:
    parsed = parse_scheduled_call(call_spec(attemptDeadlineSeconds=value), DEFAULTS)
    assert parsed.attempt_deadline_seconds == value


@pytest.mark.parametrize("value", [-1, 51])
def test_history_limit_range(value: int) -> None:
    assert invalid_field(call_spec(historyLimit=value)) == "spec.historyLimit"


def test_enums_and_types() -> None:
    assert invalid_field(call_spec(delivery="Carrier")) == "spec.delivery"
    assert invalid_field(call_spec(deletionPolicy="Orphan")) == "spec.deletionPolicy"
    assert invalid_field(call_spec(paused="yes")) == "spec.paused"
    assert invalid_field(call_spec(retry=[1])) == "spec.retry"
    assert invalid_field(call_spec(description="x" * 501)) == "spec.description"
    with pytest.raises(InvalidSpec) as info:
        parse_scheduled_call(["not", "a", "map"], DEFAULTS)  # type: ignore[arg-type]
    assert info.value.field == "spec"


def test_operation_only_with_relay() -> None:
    assert invalid_field(call_spec(operation={"follow": True})) == "spec.operation"
    assert invalid_field(call_spec(delivery="Direct", operation={})) == "spec.operation"
    bad_timeout = call_spec(delivery="Relay", operation={"timeoutSeconds": 0})
    assert invalid_field(bad_timeout) == "spec.operation.timeoutSeconds"


@pytest.mark.parametrize("name", ["Runner", "runner_1", "-runner", "a" * 254])
def test_service_account_name(name: str) -> None:
    assert invalid_field(call_spec(serviceAccountName=name)) == "spec.serviceAccountName"


def test_service_account_name_defaults_to_the_operator_setting() -> None:
    ctx = replace(DEFAULTS, service_account_name="default-runner")
    assert parse_scheduled_call(call_spec(), ctx).service_account_name == "default-runner"
    spec = call_spec(serviceAccountName="mine")
    assert parse_scheduled_call(spec, ctx).service_account_name == "mine"


# -- project and location: spec -> namespace annotations -> operator settings --

ANNOTATIONS = {"gcpcall.dev/project": "team-project", "gcpcall.dev/location": "asia-east1"}


def test_placement_order() -> None:
    assert resolve_placement("spec-project", "us-east4", ANNOTATIONS, "op-project", "eu1") == (
        Placement("spec-project", "us-east4"))
    assert resolve_placement(None, None, ANNOTATIONS, "op-project", "europe-west1") == (
        Placement("team-project", "asia-east1"))
    assert resolve_placement(None, None, {}, "op-project", "europe-west1") == (
        Placement("op-project", "europe-west1"))
    mixed = resolve_placement("spec-project", None, {"gcpcall.dev/location": "me-west1"},
                              None, "europe-west1")
    assert mixed == Placement("spec-project", "me-west1")


def test_placement_through_the_parser() -> None:
    spec = call_spec()
    del spec["project"], spec["location"]
    parsed = parse_scheduled_call(spec, replace(DEFAULTS, namespace_annotations=ANNOTATIONS))
    assert (parsed.project, parsed.location) == ("team-project", "asia-east1")


def test_missing_project_or_location_names_the_field() -> None:
    spec = call_spec()
    del spec["project"], spec["location"]
    assert invalid_field(spec, project=None) == "spec.project"
    assert invalid_field(spec, location=None) == "spec.location"
    with pytest.raises(InvalidSpec) as info:
        resolve_placement(None, None, {"gcpcall.dev/project": "  "}, None, "us-east1")
    assert info.value.field == "spec.project"


@pytest.mark.parametrize(
    "project", ["p", "My-Project", "1project", "project-", "a" * 31, "proj_ect", "x/y-project"]
)
def test_invalid_project_ids(project: str) -> None:
    assert invalid_field(call_spec(project=project)) == "spec.project"


@pytest.mark.parametrize("project", ["my-project", "example.com:my-project", "abcdef",
                                     "a" * 30])
def test_valid_project_ids(project: str) -> None:
    assert parse_scheduled_call(call_spec(project=project), DEFAULTS).project == project


def test_invalid_project_from_an_annotation_says_where_it_came_from() -> None:
    spec = call_spec()
    del spec["project"]
    with pytest.raises(InvalidSpec) as info:
        parse_scheduled_call(spec, replace(
            DEFAULTS, namespace_annotations={"gcpcall.dev/project": "Bad"}))
    assert info.value.field == "spec.project"
    assert "gcpcall.dev/project" in info.value.message


@pytest.mark.parametrize("location", ["US-central1", "us central1", "us/central1", "-us",
                                      "us-", "a" * 64])
def test_invalid_locations(location: str) -> None:
    assert invalid_field(call_spec(location=location)) == "spec.location"
