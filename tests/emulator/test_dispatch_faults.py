"""Dropped dispatch responses: the target handled the request, the emulator lost the answer.

Why: the relay's at-most-once promise is about exactly this case - Cloud Scheduler or Cloud
Tasks sends the call, the target acts on it, but the answer never comes back before the
deadline (or the connection breaks), so the service retries a call that already happened.
The admin route `/emulator/v1/dispatch/drop-responses` makes the next N matching
dispatches end that way; Cloud Scheduler's attempt_deadline and Cloud Tasks'
dispatch_deadline references call such an attempt a DEADLINE_EXCEEDED failure and retry it
per the retry policy, which is what these tests check through the official clients.
"""

from __future__ import annotations

import datetime
from typing import Any

from google.cloud import scheduler_v1, tasks_v2

from tests.emulator.conftest import PARENT, RunningEmulator
from tests.emulator.googleapis_client import GoogleClient
from tests.emulator.target import TargetServer
from tests.emulator.tasks_conftest import new_queue_id, queue_name, wait_outcome_async

DROPS = "/dispatch/drop-responses"
RESIZE = (
    "https://compute.googleapis.com/compute/v1/projects/demo-project/zones/europe-west3-a/"
    "instanceGroupManagers/web/resize?size=4"
)


def retrying_job(job_id: str, uri: str, **http: Any) -> scheduler_v1.Job:
    return scheduler_v1.Job(
        name=f"{PARENT}/jobs/{job_id}",
        schedule="0 0 1 1 *",
        time_zone="Etc/UTC",
        http_target=scheduler_v1.HttpTarget(uri=uri, **http),
        retry_config=scheduler_v1.RetryConfig(
            retry_count=3, min_backoff_duration=datetime.timedelta(seconds=0)
        ),
    )


async def test_a_dropped_scheduler_response_is_a_deadline_exceeded_attempt_then_retried(
    emulator: RunningEmulator,
    target: TargetServer,
    scheduler_async_client: scheduler_v1.CloudSchedulerAsyncClient,
) -> None:
    job = await scheduler_async_client.create_job(
        parent=PARENT, job=retrying_job("dropped", target.url("/run"))
    )
    status, added = await emulator.admin_async("POST", DROPS, {"host": "127.0.0.1"})
    assert status == 200
    rule = added["rule"]
    assert rule | {"id": 0} == {
        "id": 0,
        "remaining": 1,
        "host": "127.0.0.1",
        "path_prefix": None,
        "code": "DEADLINE_EXCEEDED",
    }

    _, fired = await emulator.admin_async(
        "POST", "/scheduler/fire", {"job": job.name, "wait": True}
    )

    attempts = fired["attempts"]
    assert [(a["retry"], a["code_name"], a["http_status"]) for a in attempts] == [
        (0, "DEADLINE_EXCEEDED", None),
        (1, "OK", 200),
    ]
    assert [r.answered for r in target.requests] == [200, 200]  # both really handled
    _, drops = await emulator.admin_async("GET", DROPS)
    assert drops["rules"] == []
    [dropped] = drops["dropped"]
    assert (dropped["rule"], dropped["method"], dropped["status"], dropped["code"]) == (
        rule["id"],
        "POST",
        200,
        "DEADLINE_EXCEEDED",
    )
    assert dropped["url"] == target.url("/run")
    assert (await scheduler_async_client.get_job(name=job.name)).status.code == 0


async def test_dropped_tasks_responses_are_retried_and_count_no_execution(
    emulator: RunningEmulator,
    target: TargetServer,
    tasks_async_client: tasks_v2.CloudTasksAsyncClient,
) -> None:
    queue = queue_name(new_queue_id())
    await tasks_async_client.create_queue(
        parent=PARENT,
        queue=tasks_v2.Queue(
            name=queue,
            retry_config=tasks_v2.RetryConfig(min_backoff=datetime.timedelta(seconds=0.05)),
        ),
    )
    status, _ = await emulator.admin_async(
        "POST", DROPS, {"count": 2, "path_prefix": "/relay/", "code": "UNAVAILABLE"}
    )
    assert status == 200
    task = await tasks_async_client.create_task(
        parent=queue,
        task=tasks_v2.Task(http_request=tasks_v2.HttpRequest(url=target.url("/relay/run"))),
    )

    history = await wait_outcome_async(emulator, task.name)

    assert history["outcome"] == "succeeded"
    assert [(a["code"], a["http_status"]) for a in history["attempts"]] == [
        ("UNAVAILABLE", None),
        ("UNAVAILABLE", None),
        ("OK", 200),
    ]
    requests = target.requests
    assert [r.answered for r in requests] == [200, 200, 200]
    assert [r.headers["X-CloudTasks-TaskRetryCount"] for r in requests] == ["0", "1", "2"]
    # the lost answers were never received: no execution, no previous response
    assert [r.headers["X-CloudTasks-TaskExecutionCount"] for r in requests] == ["0"] * 3
    assert [r.headers.get("X-CloudTasks-TaskPreviousResponse") for r in requests] == [None] * 3
    assert requests[1].headers["X-CloudTasks-TaskRetryReason"].startswith("UNAVAILABLE(14): ")
    _, drops = await emulator.admin_async("GET", DROPS)
    assert [d["code"] for d in drops["dropped"]] == ["UNAVAILABLE", "UNAVAILABLE"]


async def test_only_matching_dispatches_lose_their_response(
    emulator: RunningEmulator,
    target: TargetServer,
    scheduler_async_client: scheduler_v1.CloudSchedulerAsyncClient,
) -> None:
    job = await scheduler_async_client.create_job(
        parent=PARENT, job=retrying_job("kept", target.url("/kept"))
    )
    await emulator.admin_async("POST", DROPS, {"host": "other.example"})
    await emulator.admin_async("POST", DROPS, {"path_prefix": "/elsewhere"})

    _, fired = await emulator.admin_async(
        "POST", "/scheduler/fire", {"job": job.name, "wait": True}
    )

    assert [a["code_name"] for a in fired["attempts"]] == ["OK"]
    _, drops = await emulator.admin_async("GET", DROPS)
    assert [r["remaining"] for r in drops["rules"]] == [1, 1]
    assert drops["dropped"] == []
    assert await emulator.admin_async("DELETE", DROPS) == (200, {"rules": [], "dropped": []})


async def test_a_dropped_answer_of_a_google_api_call_makes_it_happen_twice(
    google: GoogleClient,
    scheduler_async_client: scheduler_v1.CloudSchedulerAsyncClient,
) -> None:
    """The hazard the relay exists for: Scheduler retries a resize that already ran."""
    await google.declare(
        "compute/instance-group-managers",
        {"project": "demo-project", "zone": "europe-west3-a", "name": "web"},
    )
    job = await scheduler_async_client.create_job(parent=PARENT, job=retrying_job("mig", RESIZE))
    await google.emulator.admin_async("POST", DROPS, {"host": "compute.googleapis.com"})

    await google.emulator.admin_async("POST", "/scheduler/fire", {"job": job.name, "wait": True})

    resizes = await google.requests(rpc="compute.instanceGroupManagers.resize")
    assert [r["status"] for r in resizes] == [200, 200]
    _, operations = await google.emulator.admin_async("GET", "/googleapis/compute/operations")
    assert len(operations["operations"]) == 2


async def test_bad_drop_rules_are_refused(emulator: RunningEmulator) -> None:
    for body in (
        {"count": 0},
        {"count": "2"},
        {"code": "INTERNAL"},
        {"path_prefix": "relay"},
        {"host": 3},
    ):
        status, answer = await emulator.admin_async("POST", DROPS, body)
        assert status == 400, (body, answer)
    assert await emulator.admin_async("GET", DROPS) == (200, {"rules": [], "dropped": []})
