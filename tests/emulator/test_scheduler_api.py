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


async def test_create_without_name_generates_one_under_parent(scheduler: SchedulerApi) -> None:
    job = http_job("unused")
    job.name = ""
    created = await scheduler.create_job(parent=PARENT, job=job)

    assert created.name.startswith(f"{PARENT}/jobs/")
    assert (await scheduler.get_job(name=created.name)).name == created.name


@pytest.mark.parametrize(
    "job_id",
    ["has.dot", "has space", "slash/inside", "x" * 501, ""],
    ids=["dot", "space", "slash", "too-long", "empty"],
)
async def test_create_refuses_a_bad_job_id(scheduler: SchedulerApi, job_id: str) -> None:
    with pytest.raises(exceptions.InvalidArgument):
        await scheduler.create_job(parent=PARENT, job=http_job(job_id))


async def test_job_id_of_500_allowed_characters_is_accepted(scheduler: SchedulerApi) -> None:
    job_id = ("Ab9_-" * 100)[:500]
    created = await scheduler.create_job(parent=PARENT, job=http_job(job_id))
    assert created.name.endswith("/jobs/" + job_id)


async def test_create_refuses_a_name_outside_parent_and_a_bad_parent(
    scheduler: SchedulerApi,
) -> None:
    job = http_job("elsewhere")
    job.name = "projects/other/locations/us-central1/jobs/elsewhere"
    with pytest.raises(exceptions.InvalidArgument):
        await scheduler.create_job(parent=PARENT, job=job)
    with pytest.raises(exceptions.InvalidArgument):
        await scheduler.create_job(parent="projects/p", job=http_job("x"))


async def test_create_twice_is_already_exists(scheduler: SchedulerApi) -> None:
    await scheduler.create_job(parent=PARENT, job=http_job("twice"))
    with pytest.raises(exceptions.AlreadyExists):
        await scheduler.create_job(parent=PARENT, job=http_job("twice", description="again"))


@pytest.mark.parametrize(
    "fields",
    [
        {"schedule": "not a cron"},
        {"schedule": "61 * * * *"},
        {"schedule": "* * * *"},
        {"schedule": "* * * * * *"},
        {"schedule": ""},
        {"time_zone": "Mars/Olympus_Mons"},
        {"time_zone": "../../etc/passwd"},
        {"description": "d" * 501},
        {"http_target": scheduler_v1.HttpTarget(uri="ftp://example.com")},
        {
            "http_target": scheduler_v1.HttpTarget(
                uri="https://example.com", http_method=scheduler_v1.HttpMethod.GET, body=b"x"
            )
        },
        {
            "http_target": scheduler_v1.HttpTarget(
                uri="https://example.com", oidc_token=scheduler_v1.OidcToken(audience="a")
            )
        },
        {"retry_config": scheduler_v1.RetryConfig(retry_count=6)},
        {"retry_config": scheduler_v1.RetryConfig(retry_count=-1)},
        {"attempt_deadline": datetime.timedelta(seconds=14)},
        {"attempt_deadline": datetime.timedelta(minutes=31)},
    ],
    ids=[
        "cron-words",
        "cron-minute-61",
        "cron-four-fields",
        "cron-six-fields",
        "no-schedule",
        "unknown-zone",
        "zone-path",
        "long-description",
        "ftp-uri",
        "get-with-body",
        "oidc-without-account",
        "retry-count-6",
        "retry-count-negative",
        "deadline-14s",
        "deadline-31m",
    ],
)
async def test_create_refuses_invalid_fields(
    scheduler: SchedulerApi, fields: dict[str, Any]
) -> None:
    with pytest.raises(exceptions.InvalidArgument):
        await scheduler.create_job(parent=PARENT, job=http_job("invalid", **fields))
    with pytest.raises(exceptions.NotFound):
        await scheduler.get_job(name=f"{PARENT}/jobs/invalid")


async def test_create_without_target_is_invalid(scheduler: SchedulerApi) -> None:
    job = scheduler_v1.Job(name=f"{PARENT}/jobs/no-target", schedule="* * * * *")
    with pytest.raises(exceptions.InvalidArgument):
        await scheduler.create_job(parent=PARENT, job=job)


@pytest.mark.parametrize(
    "target",
    [
        {"pubsub_target": scheduler_v1.PubsubTarget(topic_name="projects/p/topics/t")},
        {"app_engine_http_target": scheduler_v1.AppEngineHttpTarget(relative_uri="/x")},
    ],
    ids=["pubsub", "app-engine"],
)
async def test_non_http_targets_are_unimplemented(
    scheduler: SchedulerApi, target: dict[str, Any]
) -> None:
    """The emulator runs only http_target jobs and says so with UNIMPLEMENTED."""
    job = scheduler_v1.Job(name=f"{PARENT}/jobs/other-target", schedule="* * * * *", **target)
    with pytest.raises(exceptions.MethodNotImplemented):
        await scheduler.create_job(parent=PARENT, job=job)


async def test_utc_spelled_lowercase_is_accepted(scheduler: SchedulerApi) -> None:
    created = await scheduler.create_job(parent=PARENT, job=http_job("lower", time_zone="utc"))
    assert created.time_zone == "utc"


async def test_schedule_time_follows_the_job_time_zone(scheduler: SchedulerApi) -> None:
    tokyo = await scheduler.create_job(
        parent=PARENT, job=http_job("tokyo", schedule="30 9 * * *", time_zone="Asia/Tokyo")
    )
    utc = await scheduler.create_job(
        parent=PARENT, job=http_job("utc", schedule="30 9 * * *", time_zone="Etc/UTC")
    )

    # 09:30 in Tokyo (UTC+9, no daylight saving) is 00:30 UTC
    assert (tokyo.schedule_time.hour, tokyo.schedule_time.minute) == (0, 30)
    assert (utc.schedule_time.hour, utc.schedule_time.minute) == (9, 30)
    local = tokyo.schedule_time.astimezone(zoneinfo.ZoneInfo("Asia/Tokyo"))
    assert (local.hour, local.minute) == (9, 30)


@pytest.mark.parametrize("method", ["get_job", "delete_job", "pause_job", "resume_job", "run_job"])
async def test_unknown_job_is_not_found(scheduler: SchedulerApi, method: str) -> None:
    with pytest.raises(exceptions.NotFound):
        await getattr(scheduler, method)(name=f"{PARENT}/jobs/missing")


@pytest.mark.parametrize("method", ["get_job", "delete_job", "pause_job", "resume_job", "run_job"])
async def test_malformed_job_name_is_invalid(scheduler: SchedulerApi, method: str) -> None:
    with pytest.raises(exceptions.InvalidArgument):
        await getattr(scheduler, method)(name="projects/p/jobs/missing-location")


async def test_update_of_unknown_job_is_not_found(scheduler: SchedulerApi) -> None:
    with pytest.raises(exceptions.NotFound):
        await scheduler.update_job(
            job=http_job("missing"), update_mask=field_mask_pb2.FieldMask(paths=["schedule"])
        )


async def test_delete_removes_the_job(scheduler: SchedulerApi) -> None:
    created = await scheduler.create_job(parent=PARENT, job=http_job("gone"))
    await scheduler.delete_job(name=created.name)

    with pytest.raises(exceptions.NotFound):
        await scheduler.get_job(name=created.name)
    with pytest.raises(exceptions.NotFound):
        await scheduler.delete_job(name=created.name)
    recreated = await scheduler.create_job(parent=PARENT, job=http_job("gone"))
    assert recreated.name == created.name


async def test_update_changes_only_the_masked_fields(
    scheduler: SchedulerApi, emulator: RunningEmulator
) -> None:
    created = await scheduler.create_job(
        parent=PARENT, job=http_job("masked", description="before", schedule="0 * * * *")
    )
    emulator.admin("POST", "/clock/advance", {"seconds": 1})
    change = http_job(
        "masked",
        description="after",
        schedule="15 3 * * *",
        http_target=scheduler_v1.HttpTarget(uri="https://example.com/elsewhere"),
    )
    updated = await scheduler.update_job(
        job=change, update_mask=field_mask_pb2.FieldMask(paths=["description"])
    )

    assert updated.description == "after"
    assert updated.schedule == "0 * * * *"
    assert updated.http_target.uri == "https://example.com/hook"
    assert updated.user_update_time > created.user_update_time
    assert await scheduler.get_job(name=created.name) == updated


async def test_update_recomputes_schedule_time(scheduler: SchedulerApi) -> None:
    await scheduler.create_job(parent=PARENT, job=http_job("resched", schedule="0 * * * *"))
    updated = await scheduler.update_job(
        job=http_job("resched", schedule="15 3 * * *", time_zone="America/New_York"),
        update_mask=field_mask_pb2.FieldMask(paths=["schedule", "time_zone"]),
    )

    local = updated.schedule_time.astimezone(zoneinfo.ZoneInfo("America/New_York"))
    assert (local.hour, local.minute) == (3, 15)


async def test_update_with_nested_mask_paths(scheduler: SchedulerApi) -> None:
    await scheduler.create_job(
        parent=PARENT,
        job=http_job(
            "nested",
            http_target=scheduler_v1.HttpTarget(
                uri="https://example.com/a", headers={"X-Keep": "1"}, body=b"old"
            ),
            retry_config=scheduler_v1.RetryConfig(retry_count=2, max_doublings=3),
        ),
    )
    change = http_job(
        "nested",
        http_target=scheduler_v1.HttpTarget(uri="https://example.com/b", body=b"new"),
        retry_config=scheduler_v1.RetryConfig(retry_count=4, max_doublings=1),
    )
    updated = await scheduler.update_job(
        job=change,
        update_mask=field_mask_pb2.FieldMask(paths=["http_target.uri", "retry_config.retry_count"]),
    )

    assert updated.http_target.uri == "https://example.com/b"
    assert updated.http_target.body == b"old"
    assert updated.http_target.headers["X-Keep"] == "1"
    assert updated.retry_config.retry_count == 4
    assert updated.retry_config.max_doublings == 3


async def test_update_ignores_output_only_fields_in_the_mask(scheduler: SchedulerApi) -> None:
    created = await scheduler.create_job(parent=PARENT, job=http_job("output-only"))
    change = http_job("output-only", description="changed", state=PAUSED)
    change.schedule_time = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)
    updated = await scheduler.update_job(
        job=change,
        update_mask=field_mask_pb2.FieldMask(
            paths=["description", "state", "schedule_time", "user_update_time", "status"]
        ),
    )

    assert updated.description == "changed"
    assert updated.state == ENABLED
    assert updated.schedule_time.year >= created.schedule_time.year


async def test_update_refuses_unknown_mask_paths(scheduler: SchedulerApi) -> None:
    await scheduler.create_job(parent=PARENT, job=http_job("bad-mask"))
    with pytest.raises(exceptions.InvalidArgument):
        await scheduler.update_job(
            job=http_job("bad-mask"), update_mask=field_mask_pb2.FieldMask(paths=["no_such"])
        )


async def test_update_validates_the_resulting_job(scheduler: SchedulerApi) -> None:
    await scheduler.create_job(parent=PARENT, job=http_job("revalidate"))
    with pytest.raises(exceptions.InvalidArgument):
        await scheduler.update_job(
            job=http_job("revalidate", schedule="every day"),
            update_mask=field_mask_pb2.FieldMask(paths=["schedule"]),
        )
    with pytest.raises(exceptions.InvalidArgument):
        await scheduler.update_job(
            job=http_job("revalidate", time_zone="Nowhere/Land"),
            update_mask=field_mask_pb2.FieldMask(paths=["time_zone"]),
        )
    assert (await scheduler.get_job(name=f"{PARENT}/jobs/revalidate")).schedule == "*/5 * * * *"


async def test_update_without_mask_changes_the_populated_fields(scheduler: SchedulerApi) -> None:
    """No mask: every field the request populates is updated (AIP-134), the rest kept."""
    await scheduler.create_job(
        parent=PARENT, job=http_job("no-mask", description="kept", schedule="0 * * * *")
    )
    change = scheduler_v1.Job(name=f"{PARENT}/jobs/no-mask", schedule="30 * * * *")
    updated = await scheduler.update_job(job=change)

    assert updated.schedule == "30 * * * *"
    assert updated.description == "kept"
    assert updated.http_target.uri == "https://example.com/hook"


async def test_pause_and_resume_transitions(scheduler: SchedulerApi) -> None:
    created = await scheduler.create_job(parent=PARENT, job=http_job("cycle"))

    with pytest.raises(exceptions.FailedPrecondition):
        await scheduler.resume_job(name=created.name)
    paused = await scheduler.pause_job(name=created.name)
    assert paused.state == PAUSED
    assert "schedule_time" not in paused
    with pytest.raises(exceptions.FailedPrecondition):
        await scheduler.pause_job(name=created.name)
    assert (await scheduler.get_job(name=created.name)).state == PAUSED

    resumed = await scheduler.resume_job(name=created.name)
    assert resumed.state == ENABLED
    assert resumed.schedule_time >= created.schedule_time


async def test_update_keeps_a_paused_job_paused(scheduler: SchedulerApi) -> None:
    created = await scheduler.create_job(parent=PARENT, job=http_job("stays-paused"))
    await scheduler.pause_job(name=created.name)
    updated = await scheduler.update_job(
        job=http_job("stays-paused", description="edited"),
        update_mask=field_mask_pb2.FieldMask(paths=["description"]),
    )
    assert updated.state == PAUSED


async def test_list_jobs_pages_through_every_job_of_the_location(scheduler: SchedulerApi) -> None:
    names = {f"{PARENT}/jobs/job-{index:02d}" for index in range(7)}
    for name in names:
        await scheduler.create_job(parent=PARENT, job=http_job(name.rsplit("/", 1)[1]))
    other = "projects/test-project/locations/europe-west1"
    await scheduler.create_job(parent=other, job=http_job("foreign", name=f"{other}/jobs/foreign"))

    pages = await scheduler.list_pages(parent=PARENT, page_size=3)

    assert [len(page.jobs) for page in pages] == [3, 3, 1]
    listed = [job.name for page in pages for job in page.jobs]
    assert sorted(listed) == sorted(names)
    assert pages[-1].next_page_token == ""
    single = await scheduler.list_pages(parent=PARENT)
    assert len(single) == 1
    assert len(single[0].jobs) == 7


async def test_list_jobs_refuses_bad_requests(scheduler: SchedulerApi) -> None:
    with pytest.raises(exceptions.InvalidArgument):
        await scheduler.list_pages(parent=PARENT, page_token="not-a-token")
    with pytest.raises(exceptions.InvalidArgument):
        await scheduler.list_pages(parent=PARENT, page_size=-1)
    with pytest.raises(exceptions.InvalidArgument):
        await scheduler.list_pages(parent="projects/only")


async def test_list_jobs_page_size_is_capped_at_500(
    scheduler_async_client: scheduler_v1.CloudSchedulerAsyncClient,
) -> None:
    for index in range(502):
        await scheduler_async_client.create_job(parent=PARENT, job=http_job(f"many-{index:03d}"))

    first = await scheduler_async_client.list_jobs(request={"parent": PARENT, "page_size": 1000})
    pages = [page async for page in first.pages]

    assert [len(page.jobs) for page in pages] == [500, 2]
