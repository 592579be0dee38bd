"""Cloud Tasks conformance, tasks: create, get, list, delete, run, names, views, tombstones.

Why: the operator's GcpTask controller creates each task once under a deterministic id,
treats ALREADY_EXISTS as "already created", polls it with GetTask and reads a vanished
task as finished. Each behaviour it relies on is checked here through the official client
(sync and async), as the Cloud Tasks v2 API reference states it.
"""

from __future__ import annotations

import datetime
import re
from typing import Any

import pytest
from google.api_core import exceptions
from google.cloud import tasks_v2
from google.protobuf import duration_pb2

from tests.emulator.conftest import RunningEmulator
from tests.emulator.target import TargetServer
from tests.emulator.tasks_conftest import (
    CLIENT_KINDS,
    PARENT,
    TasksApi,
    clock_now,
    http_task,
    new_queue_id,
    queue_name,
    tasks_api,
    wait_outcome_async,
)

BASIC = tasks_v2.Task.View.BASIC
FULL = tasks_v2.Task.View.FULL
GONE = (
    "The task no longer exists, though a task with this name existed recently. "
    "The task either successfully completed or was deleted."
)


@pytest.fixture(params=CLIENT_KINDS)
def tasks(request: pytest.FixtureRequest, emulator: RunningEmulator) -> TasksApi:
    """The official client, sync then async."""
    return tasks_api(request)


@pytest.fixture
async def queue(tasks: TasksApi) -> str:
    """A new queue with the default settings."""
    name = queue_name(new_queue_id())
    await tasks.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=name))
    return name


def later(emulator: RunningEmulator, hours: float = 1) -> datetime.datetime:
    """A schedule time that keeps a task from running during the test."""
    return clock_now(emulator) + datetime.timedelta(hours=hours)


async def test_create_returns_the_basic_view_with_defaults(
    tasks: TasksApi, queue: str, emulator: RunningEmulator
) -> None:
    before = clock_now(emulator)
    created = await tasks.create_task(
        parent=queue,
        task=http_task(
            "http://127.0.0.1:9/hook",
            name=f"{queue}/tasks/first_task-1",
            body=b'{"a": 1}',
            headers={"Content-Type": "application/json"},
        ),
    )

    assert created.name == f"{queue}/tasks/first_task-1"
    assert created.view == BASIC
    assert created.http_request.url == "http://127.0.0.1:9/hook"
    assert created.http_request.http_method == tasks_v2.HttpMethod.POST  # the default
    assert created.http_request.headers["Content-Type"] == "application/json"
    # HttpRequest.headers: "User-Agent: This will be set to "Google-Cloud-Tasks"."
    assert created.http_request.headers["User-Agent"] == "Google-Cloud-Tasks"
    # Task.View.BASIC "omits fields which can be large or can contain sensitive data":
    # the body. (Crosscheck: the Go emulator returns the body in every view.)
    assert created.http_request.body == b""
    assert created.dispatch_deadline == datetime.timedelta(minutes=10)
    assert created.schedule_time >= before.replace(microsecond=0)
    assert created.create_time.microsecond == 0
    assert created.dispatch_count == 0
    assert created.response_count == 0
    assert "first_attempt" not in created
    assert "last_attempt" not in created


async def test_full_view_includes_the_body(
    tasks: TasksApi, queue: str, emulator: RunningEmulator
) -> None:
    name = f"{queue}/tasks/with-body"
    task = http_task(
        "http://127.0.0.1:9/", name=name, body=b"payload", schedule_time=later(emulator)
    )
    created = await tasks.create_task(
        request={"parent": queue, "task": task, "response_view": FULL}
    )
    assert created.view == FULL
    assert created.http_request.body == b"payload"

    assert (await tasks.get_task(name=name)).http_request.body == b""
    full = await tasks.get_task(request={"name": name, "response_view": FULL})
    assert full.http_request.body == b"payload"
    pages = await tasks.list_task_pages(parent=queue, response_view=FULL)
    assert [t.http_request.body for page in pages for t in page.tasks] == [b"payload"]


async def test_a_task_without_a_name_gets_a_server_assigned_id(
    tasks: TasksApi, queue: str, emulator: RunningEmulator
) -> None:
    first = await tasks.create_task(
        parent=queue, task=http_task("http://127.0.0.1:9/", schedule_time=later(emulator))
    )
    second = await tasks.create_task(
        parent=queue, task=http_task("http://127.0.0.1:9/", schedule_time=later(emulator))
    )

    assert re.fullmatch(re.escape(queue) + r"/tasks/\d+", first.name)
    assert first.name != second.name
    assert (await tasks.get_task(name=first.name)).name == first.name


@pytest.mark.parametrize(
    "task_id",
    ["has.dot", "has space", "x" * 501],
    ids=["dot", "space", "too-long"],
)
async def test_create_refuses_a_bad_task_id(tasks: TasksApi, queue: str, task_id: str) -> None:
    # Task.name: TASK_ID can contain only letters, numbers, hyphens or underscores, at most
    # 500 characters. (Crosscheck: the Go emulator accepts "has.dot": unanchored regex.)
    with pytest.raises(exceptions.InvalidArgument):
        await tasks.create_task(
            parent=queue, task=http_task("http://127.0.0.1:9/", name=f"{queue}/tasks/{task_id}")
        )


async def test_create_refuses_a_name_in_another_queue(tasks: TasksApi, queue: str) -> None:
    other = queue_name(new_queue_id())
    await tasks.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=other))
    with pytest.raises(exceptions.InvalidArgument):
        await tasks.create_task(
            parent=queue, task=http_task("http://127.0.0.1:9/", name=f"{other}/tasks/t")
        )


async def test_create_in_a_missing_queue_is_failed_precondition(tasks: TasksApi) -> None:
    # Cloud Tasks answers CreateTask into a queue that does not exist with
    # FAILED_PRECONDITION "Queue does not exist." (code 9), not NOT_FOUND - as its clients
    # see it (google-cloud-php: {"message": "Queue does not exist.", "code": 9}). The
    # reference only says "The queue must already exist."
    # Crosscheck disagreement: the Go emulator answers NOT_FOUND.
    with pytest.raises(exceptions.FailedPrecondition, match="Queue does not exist"):
        await tasks.create_task(
            parent=queue_name(new_queue_id()), task=http_task("http://127.0.0.1:9/")
        )
    with pytest.raises(exceptions.InvalidArgument):
        await tasks.create_task(parent=f"{PARENT}/queues/bad_queue", task=http_task("http://x/"))


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"url": "ftp://127.0.0.1/"}, "url-scheme"),
        ({"url": "127.0.0.1:9/no-scheme"}, "url-scheme"),
        ({"http_method": tasks_v2.HttpMethod.GET, "body": b"x"}, "body-with-get"),
        ({"dispatch_deadline": duration_pb2.Duration(seconds=14)}, "deadline-below-15s"),
        ({"dispatch_deadline": duration_pb2.Duration(seconds=1801)}, "deadline-over-30min"),
        ({"schedule_time_days": 31}, "schedule-over-30-days"),
        ({"oidc_token": tasks_v2.OidcToken()}, "token-without-account"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
async def test_create_refuses_what_the_reference_forbids(
    tasks: TasksApi, queue: str, emulator: RunningEmulator, fields: dict[str, object], reason: str
) -> None:
    # HttpRequest.url must begin with http:// or https://; a body is allowed only with
    # POST, PUT or PATCH; dispatch_deadline must be in [15 seconds, 30 minutes]; a task can
    # be scheduled at most 30 days ahead. (Crosscheck disagreement: the Go emulator accepts
    # all of these - and its dispatcher then panics on the URL without a scheme.)
    values: dict[str, Any] = dict(fields)
    url = str(values.pop("url", "http://127.0.0.1:9/"))
    days = values.pop("schedule_time_days", None)
    if isinstance(days, int):
        values["schedule_time"] = clock_now(emulator) + datetime.timedelta(days=days)
    with pytest.raises(exceptions.InvalidArgument):
        await tasks.create_task(parent=queue, task=http_task(url, **values))


async def test_app_engine_tasks_are_not_emulated(tasks: TasksApi, queue: str) -> None:
    task = tasks_v2.Task(app_engine_http_request=tasks_v2.AppEngineHttpRequest(relative_uri="/"))
    with pytest.raises(exceptions.MethodNotImplemented):
        await tasks.create_task(parent=queue, task=task)


async def test_a_past_schedule_time_becomes_now(
    tasks: TasksApi, queue: str, emulator: RunningEmulator
) -> None:
    # CreateTask: "If schedule_time is not set or is in the past then Cloud Tasks will set
    # it to the current time."
    await tasks.pause_queue(name=queue)
    before = clock_now(emulator)
    created = await tasks.create_task(
        parent=queue,
        task=http_task("http://127.0.0.1:9/", schedule_time=before - datetime.timedelta(days=3)),
    )
    assert created.schedule_time >= before


async def test_a_used_id_is_refused_while_the_task_waits(
    tasks: TasksApi, queue: str, emulator: RunningEmulator
) -> None:
    name = f"{queue}/tasks/dup"
    task = http_task("http://127.0.0.1:9/", name=name, schedule_time=later(emulator))
    await tasks.create_task(parent=queue, task=task)
    with pytest.raises(exceptions.AlreadyExists):
        await tasks.create_task(parent=queue, task=task)


async def test_a_used_id_is_refused_after_the_task_ran(
    tasks: TasksApi, queue: str, emulator: RunningEmulator, target: TargetServer
) -> None:
    name = f"{queue}/tasks/ran-once"
    await tasks.create_task(parent=queue, task=http_task(target.url("/ran"), name=name))
    history = await wait_outcome_async(emulator, name)
    assert history["outcome"] == "succeeded"

    # Gone after success: GetTask, DeleteTask and RunTask say NOT_FOUND with Cloud Tasks'
    # "existed recently" message. (Crosscheck disagreement: the Go emulator answers GetTask
    # with FAILED_PRECONDITION; Cloud Tasks' clients see code 5 NOT_FOUND for it.)
    with pytest.raises(exceptions.NotFound, match="existed recently"):
        await tasks.get_task(name=name)
    with pytest.raises(exceptions.NotFound):
        await tasks.delete_task(name=name)
    with pytest.raises(exceptions.NotFound):
        await tasks.run_task(name=name)
    # CreateTask: "If a task's ID is identical to that of an existing task or a task that
    # was deleted or executed recently then the call will fail with ALREADY_EXISTS."
    with pytest.raises(exceptions.AlreadyExists):
        await tasks.create_task(parent=queue, task=http_task(target.url("/ran"), name=name))
    assert len(target.requests) == 1


async def test_a_used_id_is_refused_after_deletion_until_the_window_ends(
    tasks: TasksApi, queue: str, emulator: RunningEmulator
) -> None:
    name = f"{queue}/tasks/deleted"
    task = http_task("http://127.0.0.1:9/", name=name, schedule_time=later(emulator, 5))
    await tasks.create_task(parent=queue, task=task)
    await tasks.delete_task(name=name)

    # Crosscheck disagreement: the Go emulator answers GetTask of a deleted task with
    # FAILED_PRECONDITION; Cloud Tasks' clients get NOT_FOUND (code 5) with this message,
    # as RunTask's reference says for finished tasks ("returns NOT_FOUND").
    with pytest.raises(exceptions.NotFound, match="existed recently"):
        await tasks.get_task(name=name)
    with pytest.raises(exceptions.AlreadyExists):
        await tasks.create_task(parent=queue, task=task)

    # The window is one hour by default ("~1hour after the original task was deleted or
    # executed"); after it, the id is free again.
    await emulator.admin_async("POST", "/clock/advance", {"seconds": 3601})
    with pytest.raises(exceptions.NotFound, match="Requested entity was not found"):
        await tasks.get_task(name=name)
    recreated = await tasks.create_task(parent=queue, task=task)
    assert recreated.name == name


async def test_the_tombstone_window_is_configurable(
    tasks: TasksApi, queue: str, emulator: RunningEmulator
) -> None:
    status, settings = await emulator.admin_async(
        "POST", "/tasks/settings", {"task_tombstone_seconds": 10}
    )
    assert status == 200
    assert settings["task_tombstone_seconds"] == 10
    name = f"{queue}/tasks/short-window"
    task = http_task("http://127.0.0.1:9/", name=name, schedule_time=later(emulator))
    await tasks.create_task(parent=queue, task=task)
    await tasks.delete_task(name=name)
    with pytest.raises(exceptions.AlreadyExists):
        await tasks.create_task(parent=queue, task=task)

    await emulator.admin_async("POST", "/clock/advance", {"seconds": 11})
    assert (await tasks.create_task(parent=queue, task=task)).name == name


async def test_get_and_delete_of_unknown_or_malformed_names(tasks: TasksApi, queue: str) -> None:
    with pytest.raises(exceptions.NotFound, match="Requested entity was not found"):
        await tasks.get_task(name=f"{queue}/tasks/never")
    with pytest.raises(exceptions.NotFound):
        await tasks.delete_task(name=f"{queue}/tasks/never")
    with pytest.raises(exceptions.NotFound):
        await tasks.run_task(name=f"{queue}/tasks/never")
    with pytest.raises(exceptions.InvalidArgument):
        await tasks.get_task(name=f"{queue}/tasks/bad.id")
    with pytest.raises(exceptions.InvalidArgument):
        await tasks.delete_task(name=f"{queue}/nottasks/x")


async def test_list_pages_through_the_tasks_of_a_queue(
    tasks: TasksApi, queue: str, emulator: RunningEmulator
) -> None:
    names = sorted(f"{queue}/tasks/t{i}" for i in range(5))
    for name in names:
        await tasks.create_task(
            parent=queue,
            task=http_task(
                "http://127.0.0.1:9/", name=name, body=b"b", schedule_time=later(emulator)
            ),
        )

    pages = await tasks.list_task_pages(parent=queue, page_size=2)

    # (Crosscheck disagreement: the Go emulator ignores page_size and answers one page.)
    assert [len(page.tasks) for page in pages] == [2, 2, 1]
    listed = [t for page in pages for t in page.tasks]
    assert [t.name for t in listed] == names
    assert all(t.view == BASIC and t.http_request.body == b"" for t in listed)
    with pytest.raises(exceptions.InvalidArgument):
        await tasks.list_task_pages(parent=queue, page_size=-1)
    with pytest.raises(exceptions.NotFound):
        await tasks.list_task_pages(parent=queue_name(new_queue_id()))


async def test_delete_removes_a_waiting_task(
    tasks: TasksApi, queue: str, emulator: RunningEmulator
) -> None:
    name = f"{queue}/tasks/to-delete"
    await tasks.create_task(
        parent=queue,
        task=http_task("http://127.0.0.1:9/", name=name, schedule_time=later(emulator)),
    )
    await tasks.delete_task(name=name)

    pages = await tasks.list_task_pages(parent=queue)
    assert [t.name for page in pages for t in page.tasks] == []
    _, history = await emulator.admin_async("GET", f"/tasks/attempts?task={name}")
    assert history["outcome"] == "deleted"
    assert history["attempts"] == []


async def test_run_task_dispatches_now_and_returns_the_dispatched_task(
    tasks: TasksApi, queue: str, emulator: RunningEmulator, target: TargetServer
) -> None:
    name = f"{queue}/tasks/run-now"
    await tasks.pause_queue(name=queue)  # RunTask dispatches "even if the queue is PAUSED"
    await tasks.create_task(
        parent=queue, task=http_task(target.url("/run"), name=name, schedule_time=later(emulator))
    )

    ran = await tasks.run_task(name=name)

    # "the task that is returned contains the status after the task is dispatched but
    # before the task is received by its target"
    assert ran.dispatch_count == 1
    assert ran.response_count == 0
    assert "dispatch_time" in ran.first_attempt
    assert "dispatch_time" in ran.last_attempt
    assert "response_time" not in ran.last_attempt
    await target.wait_for_async(1)
    history = await wait_outcome_async(emulator, name)
    assert history["outcome"] == "succeeded"
    assert history["attempts"][0]["forced"] is True
    with pytest.raises(exceptions.NotFound):
        await tasks.get_task(name=name)


async def test_a_failed_run_task_reschedules_with_the_queue_backoff(
    tasks: TasksApi, emulator: RunningEmulator, target: TargetServer
) -> None:
    queue = queue_name(new_queue_id())
    retry = tasks_v2.RetryConfig(min_backoff=datetime.timedelta(seconds=30))
    await tasks.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=queue, retry_config=retry))
    name = f"{queue}/tasks/run-fails"
    await tasks.create_task(
        parent=queue, task=http_task(target.url("/fail"), name=name, schedule_time=later(emulator))
    )
    target.reply(500)

    await tasks.run_task(name=name)
    history = await wait_outcome_async(emulator, name, attempts_at_least=1)

    # "otherwise the task's schedule_time will be reset to the time that RunTask was called
    # plus the retry delay specified in the queue's RetryConfig"
    task = await tasks.get_task(name=name)
    responded = history["attempts"][0]["response_timestamp"]
    assert task.schedule_time.timestamp() == pytest.approx(responded + 30, abs=1e-3)
    assert task.dispatch_count == 1
    assert task.response_count == 1
    assert task.last_attempt.response_status.code == 13  # INTERNAL for HTTP 500
