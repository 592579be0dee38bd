"""Cloud Tasks conformance, queues: create, get, list, update, delete, pause, resume, purge.

Why: the operator creates tasks in queues it does not own, and the demo and tests create
those queues through the emulator; each behaviour here is what the Cloud Tasks v2 API
reference states, checked through the official client (sync and async, via `tasks`).
"""

from __future__ import annotations

import datetime

import pytest
from google.api_core import exceptions
from google.cloud import tasks_v2
from google.protobuf import field_mask_pb2

from tests.emulator.conftest import RunningEmulator
from tests.emulator.tasks_conftest import (
    CLIENT_KINDS,
    PARENT,
    TasksApi,
    clock_now,
    http_task,
    new_queue_id,
    queue_name,
    tasks_api,
)

RUNNING = tasks_v2.Queue.State.RUNNING
PAUSED = tasks_v2.Queue.State.PAUSED


@pytest.fixture(params=CLIENT_KINDS)
def tasks(request: pytest.FixtureRequest, emulator: RunningEmulator) -> TasksApi:
    """The official client, sync then async."""
    return tasks_api(request)


async def test_create_fills_the_documented_defaults(tasks: TasksApi) -> None:
    name = queue_name(new_queue_id())
    created = await tasks.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=name))
    fetched = await tasks.get_queue(name=name)

    assert fetched == created
    assert fetched.state == RUNNING
    assert fetched.rate_limits.max_dispatches_per_second == 500
    assert fetched.rate_limits.max_burst_size == 100
    assert fetched.rate_limits.max_concurrent_dispatches == 1000
    assert fetched.retry_config.max_attempts == 100
    assert fetched.retry_config.min_backoff == datetime.timedelta(seconds=0.1)
    assert fetched.retry_config.max_backoff == datetime.timedelta(hours=1)
    assert fetched.retry_config.max_doublings == 16
    assert "max_retry_duration" not in fetched.retry_config
    assert "purge_time" not in fetched


async def test_create_keeps_given_settings_and_ignores_output_only_ones(tasks: TasksApi) -> None:
    name = queue_name(new_queue_id())
    queue = tasks_v2.Queue(
        name=name,
        state=PAUSED,  # output only: a new queue runs
        rate_limits=tasks_v2.RateLimits(
            max_dispatches_per_second=5, max_concurrent_dispatches=3, max_burst_size=77
        ),
        retry_config=tasks_v2.RetryConfig(
            max_attempts=-1,
            max_retry_duration=datetime.timedelta(minutes=10),
            min_backoff=datetime.timedelta(seconds=2),
            max_backoff=datetime.timedelta(seconds=60),
            max_doublings=3,
        ),
    )
    created = await tasks.create_queue(parent=PARENT, queue=queue)

    assert created.state == RUNNING
    assert created.rate_limits.max_dispatches_per_second == 5
    assert created.rate_limits.max_concurrent_dispatches == 3
    assert created.rate_limits.max_burst_size == 5  # derived from the rate, not the input
    assert created.retry_config.max_attempts == -1
    assert created.retry_config.max_retry_duration == datetime.timedelta(minutes=10)
    assert created.retry_config.min_backoff == datetime.timedelta(seconds=2)
    assert created.retry_config.max_backoff == datetime.timedelta(seconds=60)
    assert created.retry_config.max_doublings == 3


async def test_create_twice_is_already_exists(tasks: TasksApi) -> None:
    name = queue_name(new_queue_id())
    await tasks.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=name))
    with pytest.raises(exceptions.AlreadyExists):
        await tasks.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=name))


@pytest.mark.parametrize(
    "queue_id",
    ["has_underscore", "has.dot", "x" * 101, ""],
    ids=["underscore", "dot", "too-long", "empty"],
)
async def test_create_refuses_a_bad_queue_id(tasks: TasksApi, queue_id: str) -> None:
    # Queue.name: QUEUE_ID can contain letters, numbers or hyphens, at most 100 characters.
    # (Crosscheck: the Go emulator accepts "has_underscore" - its name regex is unanchored.)
    with pytest.raises(exceptions.InvalidArgument):
        await tasks.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=queue_name(queue_id)))


async def test_create_refuses_a_queue_outside_its_parent(tasks: TasksApi) -> None:
    name = f"projects/other/locations/us-central1/queues/{new_queue_id()}"
    with pytest.raises(exceptions.InvalidArgument):
        await tasks.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=name))
    with pytest.raises(exceptions.InvalidArgument):
        await tasks.create_queue(parent="projects/p", queue=tasks_v2.Queue(name=name))


@pytest.mark.parametrize(
    ("limits", "retry"),
    [
        (tasks_v2.RateLimits(max_dispatches_per_second=501), None),
        (tasks_v2.RateLimits(max_concurrent_dispatches=5001), None),
        (None, tasks_v2.RetryConfig(max_attempts=-2)),
        (
            None,
            tasks_v2.RetryConfig(
                min_backoff=datetime.timedelta(seconds=10),
                max_backoff=datetime.timedelta(seconds=5),
            ),
        ),
    ],
    ids=["rate-over-500", "concurrency-over-5000", "attempts-below-minus-1", "min-over-max"],
)
async def test_create_refuses_settings_out_of_bounds(
    tasks: TasksApi, limits: tasks_v2.RateLimits | None, retry: tasks_v2.RetryConfig | None
) -> None:
    queue = tasks_v2.Queue(name=queue_name(new_queue_id()))
    if limits is not None:
        queue.rate_limits = limits
    if retry is not None:
        queue.retry_config = retry
    with pytest.raises(exceptions.InvalidArgument):
        await tasks.create_queue(parent=PARENT, queue=queue)


async def test_get_missing_and_malformed(tasks: TasksApi) -> None:
    with pytest.raises(exceptions.NotFound):
        await tasks.get_queue(name=queue_name(new_queue_id()))
    with pytest.raises(exceptions.InvalidArgument):
        await tasks.get_queue(name=f"{PARENT}/queues/bad_id")


async def test_list_pages_through_queues_of_one_location(tasks: TasksApi) -> None:
    names = sorted(queue_name(new_queue_id("list")) for _ in range(5))
    for name in names:
        await tasks.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=name))
    other = "projects/test-project/locations/europe-west1"
    await tasks.create_queue(parent=other, queue=tasks_v2.Queue(name=f"{other}/queues/x"))

    pages = await tasks.list_queue_pages(parent=PARENT, page_size=2)

    # ListQueuesRequest.page_size: "Requested page size" with next_page_token for more.
    # (Crosscheck disagreement: the Go emulator ignores page_size and answers one page.)
    assert [len(page.queues) for page in pages] == [2, 2, 1]
    assert [q.name for page in pages for q in page.queues] == names
    assert pages[-1].next_page_token == ""
    with pytest.raises(exceptions.InvalidArgument):
        await tasks.list_queue_pages(parent=PARENT, page_token="not-a-token")


async def test_list_filters_by_state(tasks: TasksApi) -> None:
    running, paused = queue_name(new_queue_id()), queue_name(new_queue_id())
    for name in (running, paused):
        await tasks.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=name))
    await tasks.pause_queue(name=paused)

    # ListQueuesRequest.filter, e.g. "state: PAUSED". (Crosscheck disagreement: the Go
    # emulator ignores the filter.)
    only_paused = await tasks.list_queue_pages(parent=PARENT, filter="state: PAUSED")
    only_running = await tasks.list_queue_pages(parent=PARENT, filter="state: RUNNING")

    assert [q.name for page in only_paused for q in page.queues] == [paused]
    assert [q.name for page in only_running for q in page.queues] == [running]


async def test_update_with_a_mask_changes_only_the_named_fields(tasks: TasksApi) -> None:
    # (Crosscheck: the Go emulator answers UpdateQueue with UNIMPLEMENTED.)
    name = queue_name(new_queue_id())
    await tasks.create_queue(
        parent=PARENT,
        queue=tasks_v2.Queue(
            name=name,
            rate_limits=tasks_v2.RateLimits(max_dispatches_per_second=10),
            retry_config=tasks_v2.RetryConfig(max_attempts=7, max_doublings=2),
        ),
    )
    change = tasks_v2.Queue(
        name=name,
        rate_limits=tasks_v2.RateLimits(max_dispatches_per_second=20),
        retry_config=tasks_v2.RetryConfig(max_attempts=3, max_doublings=9),
        state=PAUSED,
    )
    updated = await tasks.update_queue(
        queue=change,
        update_mask=field_mask_pb2.FieldMask(paths=["retry_config.max_attempts", "state"]),
    )

    assert updated.retry_config.max_attempts == 3
    assert updated.retry_config.max_doublings == 2  # not in the mask
    assert updated.rate_limits.max_dispatches_per_second == 10
    assert updated.state == RUNNING  # output only: only Pause/Resume change it
    assert await tasks.get_queue(name=name) == updated


async def test_update_without_a_mask_replaces_every_field(tasks: TasksApi) -> None:
    name = queue_name(new_queue_id())
    await tasks.create_queue(
        parent=PARENT,
        queue=tasks_v2.Queue(
            name=name, retry_config=tasks_v2.RetryConfig(max_attempts=7, max_doublings=2)
        ),
    )
    updated = await tasks.update_queue(
        queue=tasks_v2.Queue(
            name=name, rate_limits=tasks_v2.RateLimits(max_dispatches_per_second=2)
        )
    )

    assert updated.rate_limits.max_dispatches_per_second == 2
    assert updated.retry_config.max_attempts == 100  # back to the default
    assert updated.retry_config.max_doublings == 16


async def test_update_creates_a_missing_queue(tasks: TasksApi) -> None:
    # UpdateQueue: "This method creates the queue if it does not exist".
    name = queue_name(new_queue_id())
    created = await tasks.update_queue(
        queue=tasks_v2.Queue(name=name, retry_config=tasks_v2.RetryConfig(max_attempts=4))
    )

    assert created.state == RUNNING
    assert (await tasks.get_queue(name=name)).retry_config.max_attempts == 4


async def test_update_refuses_an_unknown_path_and_bad_values(tasks: TasksApi) -> None:
    name = queue_name(new_queue_id())
    await tasks.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=name))
    with pytest.raises(exceptions.InvalidArgument):
        await tasks.update_queue(
            queue=tasks_v2.Queue(name=name),
            update_mask=field_mask_pb2.FieldMask(paths=["no_such_field"]),
        )
    with pytest.raises(exceptions.InvalidArgument):
        await tasks.update_queue(
            queue=tasks_v2.Queue(
                name=name, rate_limits=tasks_v2.RateLimits(max_dispatches_per_second=1000)
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["rate_limits"]),
        )


async def test_pause_and_resume_change_the_state(tasks: TasksApi) -> None:
    name = queue_name(new_queue_id())
    await tasks.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=name))

    assert (await tasks.pause_queue(name=name)).state == PAUSED
    assert (await tasks.get_queue(name=name)).state == PAUSED
    assert (await tasks.pause_queue(name=name)).state == PAUSED  # pausing again is fine
    assert (await tasks.resume_queue(name=name)).state == RUNNING
    assert (await tasks.get_queue(name=name)).state == RUNNING


@pytest.mark.parametrize("rpc", ["pause_queue", "resume_queue", "purge_queue", "delete_queue"])
async def test_queue_rpcs_on_a_missing_queue_are_not_found(tasks: TasksApi, rpc: str) -> None:
    # (Crosscheck: the Go emulator panics on Pause/Resume/Purge of a missing queue.)
    with pytest.raises(exceptions.NotFound):
        await getattr(tasks, rpc)(name=queue_name(new_queue_id()))


async def test_a_queue_that_was_paused_can_be_deleted(tasks: TasksApi) -> None:
    # Crosscheck disagreement: the Go emulator's DeleteQueue of a queue that was paused
    # hangs until the client's deadline; the reference sets no such condition.
    name = queue_name(new_queue_id())
    await tasks.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=name))
    await tasks.pause_queue(name=name)
    await tasks.delete_queue(name=name, timeout=5)
    with pytest.raises(exceptions.NotFound):
        await tasks.get_queue(name=name)


async def test_delete_then_the_name_is_refused_for_seven_days(
    tasks: TasksApi, emulator: RunningEmulator
) -> None:
    name = queue_name(new_queue_id())
    await tasks.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=name))
    await tasks.delete_queue(name=name)

    with pytest.raises(exceptions.NotFound):
        await tasks.get_queue(name=name)
    # DeleteQueue: "a queue with the same name can't be created for 7 days".
    with pytest.raises(exceptions.FailedPrecondition):
        await tasks.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=name))
    with pytest.raises(exceptions.FailedPrecondition):
        await tasks.create_task(parent=name, task=http_task("http://127.0.0.1:9/"))

    await emulator.admin_async("POST", "/clock/advance", {"seconds": 7 * 86400 + 1})
    recreated = await tasks.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=name))
    assert recreated.state == RUNNING


async def test_purge_deletes_the_tasks_and_sets_purge_time(
    tasks: TasksApi, emulator: RunningEmulator
) -> None:
    name = queue_name(new_queue_id())
    await tasks.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=name))
    later = clock_now(emulator) + datetime.timedelta(hours=1)
    task = await tasks.create_task(
        parent=name,
        task=http_task("http://127.0.0.1:9/", name=f"{name}/tasks/purged", schedule_time=later),
    )
    before = clock_now(emulator)

    purged = await tasks.purge_queue(name=name)

    # Queue.purge_time: "The last time this queue was purged." (Crosscheck disagreement:
    # the Go emulator never sets it.)
    assert purged.purge_time >= before
    assert (await tasks.get_queue(name=name)).purge_time == purged.purge_time
    pages = await tasks.list_task_pages(parent=name)
    assert [t.name for page in pages for t in page.tasks] == []
    with pytest.raises(exceptions.NotFound):
        await tasks.get_task(name=task.name)
    # A purged task's name is refused like any deleted task's.
    with pytest.raises(exceptions.AlreadyExists):
        await tasks.create_task(parent=name, task=http_task("http://127.0.0.1:9/", name=task.name))
