"""GcpTask spec parsing: queue id, schedule time window, deadlines, and the shared rules."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gcpcall.api.common import DeletionPolicy, Delivery, OperationPolicy
from gcpcall.api.errors import InvalidSpec
from gcpcall.api.gcp_task import parse_gcp_task
from gcpcall.api.target import OidcToken
from tests.unit._specs import DEFAULTS, NOW, task_spec, with_target


def invalid_field(spec: dict[str, Any], **ctx: Any) -> str:
    with pytest.raises(InvalidSpec) as info:
        parse_gcp_task(spec, replace(DEFAULTS, **ctx))
    assert info.value.message
    return info.value.field


def test_minimal_task_gets_every_default() -> None:
    parsed = parse_gcp_task({"queue": "etl", "target": {"uri": "https://example.com/x"}},
                            DEFAULTS)
    assert parsed.queue == "etl"
    assert (parsed.project, parsed.location) == ("operator-project", "us-central1")
    assert parsed.queue_name == "projects/operator-project/locations/us-central1/queues/etl"
    assert parsed.schedule_time is None
    assert parsed.delay_seconds is None
    assert parsed.schedule_at(NOW) is None
    assert parsed.dispatch_deadline_seconds == 600
    assert parsed.delivery is Delivery.DIRECT
    assert parsed.operation is None
    assert parsed.ttl_seconds_after_finished is None
    assert parsed.deletion_policy is DeletionPolicy.DELETE


def test_every_field_is_read() -> None:
    spec = task_spec(scheduleTime="2026-11-22T12:00:00Z", dispatchDeadlineSeconds=1800,
                     delivery="Relay", operation={"timeoutSeconds": 120},
                     ttlSecondsAfterFinished=86400, deletionPolicy="Abandon",
                     serviceAccountName="etl-runner")
    parsed = parse_gcp_task(spec, DEFAULTS)
    assert parsed.schedule_time == datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    assert parsed.schedule_at(NOW) == parsed.schedule_time
    assert parsed.dispatch_deadline_seconds == 1800
    assert parsed.operation == OperationPolicy(True, 120)
    assert parsed.ttl_seconds_after_finished == 86400
    assert parsed.deletion_policy is DeletionPolicy.ABANDON
    assert parsed.service_account_name == "etl-runner"
    assert parsed.target.auth is not None
    assert parsed.target.auth.token == OidcToken("https://run.example.com/launch")


def test_schedule_time_with_an_offset_is_normalized_to_utc() -> None:
    parsed = parse_gcp_task(task_spec(scheduleTime="2026-11-22T13:30:00+01:00"), DEFAULTS)
    assert parsed.schedule_time == datetime(2026, 11, 22, 12, 30, tzinfo=UTC)


def test_delay_seconds_anchors_on_the_given_time() -> None:
    parsed = parse_gcp_task(task_spec(delaySeconds=90), DEFAULTS)
    assert parsed.delay_seconds == 90
    assert parsed.schedule_at(NOW) == NOW + timedelta(seconds=90)


@pytest.mark.parametrize("queue", ["etl_queue", "a" * 101, "etl/../x", "etl queue"])
def test_queue_id_rules(queue: str) -> None:
    assert invalid_field(task_spec(queue=queue)) == "spec.queue"


def test_queue_id_edges() -> None:
    assert parse_gcp_task(task_spec(queue="A-1" + "a" * 97), DEFAULTS).queue.startswith("A-1")
    spec = task_spec()
    del spec["queue"]
    assert invalid_field(spec) == "spec.queue"


@pytest.mark.parametrize(
    "when",
    [
        "2026-11-22T09:00:00Z",  # == creation: not in the future
        "2026-11-21T09:00:00Z",
        "2026-12-22T09:00:01Z",  # more than 30 days ahead
        "2026-11-22T12:00:00",  # no offset
        "2026-11-22",
        "tomorrow",
    ],
)
def test_schedule_time_rules(when: str) -> None:
    assert invalid_field(task_spec(scheduleTime=when)) == "spec.scheduleTime"


def test_schedule_time_at_thirty_days_passes() -> None:
    parsed = parse_gcp_task(task_spec(scheduleTime="2026-12-22T09:00:00Z"), DEFAULTS)
    assert parsed.schedule_time == NOW + timedelta(days=30)


def test_schedule_time_verdict_is_stable_after_creation() -> None:
    """Checked against the creation time passed in, not the wall clock."""
    spec = task_spec(scheduleTime="2026-11-22T10:00:00Z")
    assert parse_gcp_task(spec, DEFAULTS).schedule_time is not None
    later = replace(DEFAULTS, now=datetime(2026, 11, 23, tzinfo=UTC))
    with pytest.raises(InvalidSpec):
        parse_gcp_task(spec, later)


def test_not_both_schedule_time_and_delay() -> None:
    spec = task_spec(scheduleTime="2026-11-22T12:00:00Z", delaySeconds=5)
    assert invalid_field(spec) == "spec.delaySeconds"


@pytest.mark.parametrize("delay", [-1, 30 * 86400 + 1])
def test_delay_range(delay: int) -> None:
    assert invalid_field(task_spec(delaySeconds=delay)) == "spec.delaySeconds"


@pytest.mark.parametrize("value", [14, 1801])
def test_dispatch_deadline_range(value: int) -> None:
    assert invalid_field(task_spec(dispatchDeadlineSeconds=value)) == (
        "spec.dispatchDeadlineSeconds")


def test_shared_rules_apply_to_tasks() -> None:
    assert invalid_field(task_spec(ttlSecondsAfterFinished=-1)) == "spec.ttlSecondsAfterFinished"
    assert invalid_field(task_spec(operation={})) == "spec.operation"
    assert invalid_field(task_spec(location="Europe")) == "spec.location"
    assert invalid_field(with_target(task_spec(), auth={"oauth": {}})) == (
        "spec.target.auth.oauth")
    assert invalid_field(with_target(task_spec(), method="GET", body={"text": "x"})) == (
        "spec.target.body")
