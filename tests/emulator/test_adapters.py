"""The operator's two Google adapters against the emulator: paging and "absent" answers.

Why here: `gcp/scheduler.py` and `gcp/tasks.py` share `gcp.calls.CountedCalls` for what
every adapter does alike (a List read page by page, each page one counted call; NOT_FOUND
as "absent" on reads and deletes). The lists the operator makes in production are one page
(a group, a queue) only above 500 jobs or 1,000 tasks, which no integration story reaches;
these tests cross a page boundary through the real gRPC protocol.
"""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.cloud import scheduler_v1, tasks_v2

from gcpcall.gcp.identity import GoogleIdentity
from gcpcall.gcp.scheduler import SchedulerAdapter
from gcpcall.gcp.tasks import TasksAdapter
from tests.emulator.conftest import PARENT, RunningEmulator
from tests.emulator.tasks_conftest import clock_now, http_task, new_queue_id, queue_name

ANONYMOUS = GoogleIdentity(email=None, access_token=None)  # the emulator runs without auth


@pytest.fixture
async def channel(emulator: RunningEmulator) -> AsyncIterator[grpc.aio.Channel]:
    ch = grpc.aio.insecure_channel(emulator.grpc_target)
    yield ch
    await ch.close()


async def _calls(emulator: RunningEmulator, method: str) -> int:
    _, log = await emulator.admin_async("GET", "/calls")
    calls: list[dict[str, Any]] = log["calls"]
    return sum(1 for c in calls if c["method"] == method)


async def test_list_jobs_reads_every_page_one_call_each(
    emulator: RunningEmulator, channel: grpc.aio.Channel,
    scheduler_async_client: scheduler_v1.CloudSchedulerAsyncClient,
) -> None:
    names = {f"{PARENT}/jobs/j{i:03d}" for i in range(501)}  # ListJobs' pages hold 500
    for name in names:
        await scheduler_async_client.create_job(parent=PARENT, job=scheduler_v1.Job(
            name=name, schedule="0 0 1 1 *", time_zone="Etc/UTC",
            http_target=scheduler_v1.HttpTarget(uri="https://example.com/hook")))
    await emulator.admin_async("DELETE", "/calls")

    listed = await SchedulerAdapter(channel).list_jobs(PARENT, ANONYMOUS)

    assert sorted(j.name for j in listed) == sorted(names)
    assert await _calls(emulator, "ListJobs") == 2


async def test_absent_jobs_are_none_and_a_second_delete_is_false(
    channel: grpc.aio.Channel,
    scheduler_async_client: scheduler_v1.CloudSchedulerAsyncClient,
) -> None:
    adapter = SchedulerAdapter(channel)
    name = f"{PARENT}/jobs/once"
    assert await adapter.get_job(name, ANONYMOUS) is None
    await scheduler_async_client.create_job(parent=PARENT, job=scheduler_v1.Job(
        name=name, schedule="0 0 1 1 *", time_zone="Etc/UTC",
        http_target=scheduler_v1.HttpTarget(uri="https://example.com/hook")))
    job = await adapter.get_job(name, ANONYMOUS)
    assert job is not None
    assert job.name == name

    assert await adapter.delete_job(name, ANONYMOUS) is True
    assert await adapter.delete_job(name, ANONYMOUS) is False
    assert await adapter.get_job(name, ANONYMOUS) is None


async def test_list_tasks_reads_every_page_and_absent_tasks_and_queues_are_none(
    emulator: RunningEmulator, channel: grpc.aio.Channel,
    tasks_async_client: tasks_v2.CloudTasksAsyncClient,
) -> None:
    queue = queue_name(new_queue_id())
    await tasks_async_client.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=queue))
    later = clock_now(emulator) + datetime.timedelta(days=1)  # none runs during the test
    names = {f"{queue}/tasks/t{i:04d}" for i in range(1001)}  # ListTasks' pages: 1,000
    for name in names:
        await tasks_async_client.create_task(parent=queue, task=http_task(
            "https://example.com/hook", name=name, schedule_time=later))
    await emulator.admin_async("DELETE", "/calls")
    adapter = TasksAdapter(channel)

    listed = await adapter.list_tasks(queue, ANONYMOUS)

    assert sorted(t.name for t in listed) == sorted(names)
    assert await _calls(emulator, "ListTasks") == 2
    one = sorted(names)[0]
    assert await adapter.delete_task(one, ANONYMOUS) is True
    assert await adapter.delete_task(one, ANONYMOUS) is False
    assert await adapter.get_task(one, ANONYMOUS) is None
    assert await adapter.get_queue(queue_name(new_queue_id()), ANONYMOUS) is None
    observed = await adapter.get_queue(queue, ANONYMOUS)
    assert observed is not None
    assert observed.name == queue
    assert not observed.paused
