"""Cloud Scheduler conformance: job CRUD, codes, update masks, pause/resume, pagination.

Why: the operator's ScheduledGcpCall controller relies on exactly these behaviours of the
Cloud Scheduler v1 API; each test drives the emulator through the official client
(sync and async, via the `scheduler` fixture) and checks what the API reference states.
"""

from __future__ import annotations

import datetime
import zoneinfo
from typing import Any

import pytest
from google.api_core import exceptions
from google.cloud import scheduler_v1
from google.protobuf import field_mask_pb2

from tests.emulator.conftest import PARENT, RunningEmulator, SchedulerApi

ENABLED = scheduler_v1.Job.State.ENABLED
PAUSED = scheduler_v1.Job.State.PAUSED


def http_job(job_id: str, **fields: Any) -> scheduler_v1.Job:
    """A valid http_target job under PARENT; `fields` override."""
    values: dict[str, Any] = {
        "name": f"{PARENT}/jobs/{job_id}",
        "schedule": "*/5 * * * *",
        "time_zone": "Etc/UTC",
        "http_target": scheduler_v1.HttpTarget(uri="https://example.com/hook"),
    }
    values.update(fields)
    return scheduler_v1.Job(**values)


async def test_create_and_get_report_defaults_and_output_fields(
    scheduler: SchedulerApi, emulator: RunningEmulator
) -> None:
    created = await scheduler.create_job(parent=PARENT, job=http_job("report"))
    fetched = await scheduler.get_job(name=created.name)

    assert fetched == created
    assert fetched.name == f"{PARENT}/jobs/report"
    assert fetched.state == ENABLED
    assert fetched.retry_config.retry_count == 0
    assert fetched.retry_config.min_backoff_duration == datetime.timedelta(seconds=5)
    assert fetched.retry_config.max_backoff_duration == datetime.timedelta(hours=1)
    assert fetched.retry_config.max_doublings == 5
    assert fetched.attempt_deadline == datetime.timedelta(seconds=180)
    assert fetched.http_target.headers["User-Agent"] == "Google-Cloud-Scheduler"
    _, clock = emulator.admin("GET", "/clock")
    now = datetime.datetime.fromisoformat(clock["now"])
    assert fetched.user_update_time <= now
    # the next run is the next multiple of five minutes after now
    assert now < fetched.schedule_time <= now + datetime.timedelta(minutes=5)
    assert fetched.schedule_time.minute % 5 == 0
    assert fetched.schedule_time.second == 0
    assert "last_attempt_time" not in fetched
    assert "status" not in fetched
