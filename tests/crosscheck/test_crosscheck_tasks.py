"""The Cloud Tasks cases both emulators must pass, run against CLOUD_TASKS_EMULATOR_ADDR.

Why: the same conformance cases, through the official client, against our emulator and
against aertje/cloud-tasks-emulator. Each case asserts what the Cloud Tasks v2 API reference
states; where the Go emulator answers otherwise the case is a strict xfail for it, with the
reason, and tests/emulator/test_tasks_*.py records the behaviour for ours (README.md lists
them). Timing is checked by ordering and ratios only.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import itertools
import json
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.api_core import exceptions
from google.cloud import tasks_v2
from google.protobuf import duration_pb2, field_mask_pb2

from tests.crosscheck.conftest import (
    PARENT,
    RecordingTarget,
    go_disagrees,
    go_lacks,
    new_id,
)

Client = tasks_v2.CloudTasksClient
MakeQueue = Callable[..., str]
FAR = datetime.datetime(2100, 1, 1, tzinfo=datetime.UTC)  # beyond 30 days: refused
ACCOUNT = "crosscheck@crosscheck.iam.gserviceaccount.com"


def soon(hours: float = 1) -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=hours)


def http_task(url: str, name: str = "", **fields: Any) -> tasks_v2.Task:
    http = {k: fields.pop(k) for k in list(fields) if k in _HTTP}
    return tasks_v2.Task(name=name, http_request=tasks_v2.HttpRequest(url=url, **http), **fields)


_HTTP = frozenset({"http_method", "headers", "body", "oauth_token", "oidc_token"})


def wait_task(
    client: Client, name: str, done: Callable[[tasks_v2.Task], bool], timeout: float = 20.0
) -> tasks_v2.Task:
    """Poll GetTask until `done(task)`; AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        task = client.get_task(name=name)
        if done(task):
            return task
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} did not get there: {task}")
        time.sleep(0.05)


def wait_gone(client: Client, name: str, timeout: float = 10.0) -> exceptions.GoogleAPICallError:
    """Poll GetTask until it fails; the error. AssertionError if the task stays."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.get_task(name=name)
        except exceptions.GoogleAPICallError as error:
            return error
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} is still there")
        time.sleep(0.05)


def jwt_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert isinstance(claims, dict)
    return claims


# -- queues ---------------------------------------------------------------------------------


def test_create_queue_fills_the_defaults(client: Client, make_queue: MakeQueue) -> None:
    queue = client.get_queue(name=make_queue())

    assert queue.state == tasks_v2.Queue.State.RUNNING
    assert queue.rate_limits.max_dispatches_per_second == 500
    assert queue.rate_limits.max_burst_size == 100
    assert queue.rate_limits.max_concurrent_dispatches == 1000
    assert queue.retry_config.max_attempts == 100
    assert queue.retry_config.min_backoff == datetime.timedelta(seconds=0.1)
    assert queue.retry_config.max_backoff == datetime.timedelta(hours=1)
    assert queue.retry_config.max_doublings == 16


def test_create_queue_twice_is_already_exists(client: Client, make_queue: MakeQueue) -> None:
    name = make_queue()
    with pytest.raises(exceptions.AlreadyExists):
        client.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=name))


@go_disagrees("accepts QUEUE_ID 'has_underscore' (its name regex is not anchored)")
def test_a_bad_queue_id_is_invalid_argument(client: Client) -> None:
    with pytest.raises(exceptions.InvalidArgument):
        client.create_queue(
            parent=PARENT, queue=tasks_v2.Queue(name=f"{PARENT}/queues/has_underscore")
        )


def test_get_missing_queue_is_not_found(client: Client) -> None:
    with pytest.raises(exceptions.NotFound):
        client.get_queue(name=f"{PARENT}/queues/{new_id('missing')}")


@go_disagrees("ignores page_size: every queue comes in one page")
def test_list_queues_honours_page_size(client: Client, make_queue: MakeQueue) -> None:
    for _ in range(3):
        make_queue()
    first = client.list_queues(request={"parent": PARENT, "page_size": 2})._response
    assert len(first.queues) <= 2
    assert first.next_page_token


@go_disagrees('ignores the filter "state: PAUSED"')
def test_list_queues_filters_by_state(client: Client, make_queue: MakeQueue) -> None:
    paused, running = make_queue(), make_queue()
    client.pause_queue(name=paused)
    names = [
        q.name for q in client.list_queues(request={"parent": PARENT, "filter": "state: PAUSED"})
    ]
    assert paused in names
    assert running not in names


@go_lacks("UpdateQueue answers UNIMPLEMENTED")
def test_update_queue_honours_the_mask(client: Client, make_queue: MakeQueue) -> None:
    name = make_queue(retry_config=tasks_v2.RetryConfig(max_attempts=7, max_doublings=2))
    updated = client.update_queue(
        queue=tasks_v2.Queue(name=name, retry_config=tasks_v2.RetryConfig(max_attempts=3)),
        update_mask=field_mask_pb2.FieldMask(paths=["retry_config.max_attempts"]),
    )
    assert updated.retry_config.max_attempts == 3
    assert updated.retry_config.max_doublings == 2


def test_pause_and_resume(client: Client, make_queue: MakeQueue) -> None:
    name = make_queue()
    assert client.pause_queue(name=name).state == tasks_v2.Queue.State.PAUSED
    assert client.get_queue(name=name).state == tasks_v2.Queue.State.PAUSED
    assert client.resume_queue(name=name).state == tasks_v2.Queue.State.RUNNING


@go_lacks("PauseQueue/ResumeQueue/PurgeQueue of a missing queue panics and the process exits")
@pytest.mark.parametrize("rpc", ["pause_queue", "resume_queue", "purge_queue"])
def test_state_rpcs_on_a_missing_queue_are_not_found(client: Client, rpc: str) -> None:
    with pytest.raises(exceptions.NotFound):
        getattr(client, rpc)(name=f"{PARENT}/queues/{new_id('missing')}")


@go_disagrees("DeleteQueue of a queue that was paused hangs until the client's deadline")
def test_a_queue_that_was_paused_can_be_deleted(client: Client) -> None:
    name = f"{PARENT}/queues/{new_id('paused')}"
    client.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=name))
    client.pause_queue(name=name)
    client.delete_queue(name=name, retry=None, timeout=5)
    with pytest.raises(exceptions.NotFound):
        client.get_queue(name=name)


def test_a_deleted_queue_name_is_refused(client: Client) -> None:
    name = f"{PARENT}/queues/{new_id('deleted')}"
    client.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=name))
    client.delete_queue(name=name)
    with pytest.raises(exceptions.NotFound):
        client.get_queue(name=name)
    with pytest.raises(exceptions.FailedPrecondition):
        client.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=name))
    with pytest.raises(exceptions.FailedPrecondition):
        client.create_task(parent=name, task=http_task("http://127.0.0.1:9/"))


def test_purge_removes_tasks_and_keeps_their_names(client: Client, make_queue: MakeQueue) -> None:
    queue = make_queue()
    name = f"{queue}/tasks/purged"
    client.create_task(
        parent=queue, task=http_task("http://127.0.0.1:9/", name, schedule_time=soon())
    )
    client.purge_queue(name=queue)
    wait_gone(client, name)
    assert list(client.list_tasks(parent=queue)) == []
    with pytest.raises(exceptions.AlreadyExists):
        client.create_task(parent=queue, task=http_task("http://127.0.0.1:9/", name))


@go_disagrees("does not set Queue.purge_time")
def test_purge_sets_purge_time(client: Client, make_queue: MakeQueue) -> None:
    queue = make_queue()
    before = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=1)
    assert client.purge_queue(name=queue).purge_time >= before


# -- tasks ----------------------------------------------------------------------------------


def test_create_task_fills_the_defaults(client: Client, make_queue: MakeQueue) -> None:
    queue = make_queue()
    task = client.create_task(
        parent=queue,
        task=http_task("http://127.0.0.1:9/", f"{queue}/tasks/d", schedule_time=soon()),
    )
    assert task.name == f"{queue}/tasks/d"
    assert task.view == tasks_v2.Task.View.BASIC
    assert task.http_request.http_method == tasks_v2.HttpMethod.POST
    assert task.http_request.headers["User-Agent"] == "Google-Cloud-Tasks"
    assert task.dispatch_deadline == datetime.timedelta(minutes=10)
    assert task.dispatch_count == 0


@go_disagrees("returns the body in the BASIC view")
def test_the_basic_view_leaves_out_the_body(client: Client, make_queue: MakeQueue) -> None:
    queue = make_queue()
    name = f"{queue}/tasks/body"
    created = client.create_task(
        parent=queue,
        task=http_task("http://127.0.0.1:9/", name, body=b"secret", schedule_time=soon()),
    )
    assert created.http_request.body == b""
    assert client.get_task(name=name).http_request.body == b""
    assert [t.http_request.body for t in client.list_tasks(parent=queue)] == [b""]


def test_the_full_view_has_the_body(client: Client, make_queue: MakeQueue) -> None:
    queue = make_queue()
    name = f"{queue}/tasks/full"
    client.create_task(
        parent=queue,
        task=http_task("http://127.0.0.1:9/", name, body=b"secret", schedule_time=soon()),
    )
    full = client.get_task(request={"name": name, "response_view": tasks_v2.Task.View.FULL})
    assert full.http_request.body == b"secret"


def test_a_task_without_a_name_gets_a_numeric_id(client: Client, make_queue: MakeQueue) -> None:
    queue = make_queue()
    task = client.create_task(
        parent=queue, task=http_task("http://127.0.0.1:9/", schedule_time=soon())
    )
    prefix, _, task_id = task.name.rpartition("/tasks/")
    assert prefix == queue
    assert task_id.isdigit()


@go_disagrees("accepts TASK_ID 'bad.id' (its name regex is not anchored)")
def test_a_bad_task_id_is_invalid_argument(client: Client, make_queue: MakeQueue) -> None:
    queue = make_queue()
    with pytest.raises(exceptions.InvalidArgument):
        client.create_task(
            parent=queue, task=http_task("http://127.0.0.1:9/", f"{queue}/tasks/bad.id")
        )


def test_a_task_named_in_another_queue_is_invalid_argument(
    client: Client, make_queue: MakeQueue
) -> None:
    queue, other = make_queue(), make_queue()
    with pytest.raises(exceptions.InvalidArgument):
        client.create_task(parent=queue, task=http_task("http://127.0.0.1:9/", f"{other}/tasks/t"))


@go_disagrees("answers NOT_FOUND; Cloud Tasks answers FAILED_PRECONDITION 'Queue does not exist.'")
def test_create_task_in_a_missing_queue_is_failed_precondition(client: Client) -> None:
    with pytest.raises(exceptions.FailedPrecondition):
        client.create_task(
            parent=f"{PARENT}/queues/{new_id('missing')}", task=http_task("http://127.0.0.1:9/")
        )


@go_disagrees("accepts all of these")
@pytest.mark.parametrize(
    "fields",
    [
        {"url": "127.0.0.1:9/no-scheme"},
        {"http_method": tasks_v2.HttpMethod.GET, "body": b"x"},
        {"dispatch_deadline": duration_pb2.Duration(seconds=5)},
        {"schedule_time": FAR},
    ],
    ids=["url-without-scheme", "body-with-get", "deadline-below-15s", "schedule-beyond-30-days"],
)
def test_requests_the_reference_forbids_are_invalid_argument(
    client: Client, make_queue: MakeQueue, fields: dict[str, Any]
) -> None:
    queue = make_queue()
    values = dict(fields)
    url = values.pop("url", "http://127.0.0.1:9/")
    # Scheduled ahead, so an emulator that wrongly accepts the task never dispatches it
    # during the run (the Go emulator's dispatcher panics on a URL without a scheme).
    values.setdefault("schedule_time", soon())
    with pytest.raises(exceptions.InvalidArgument):
        client.create_task(parent=queue, task=http_task(url, **values))


def test_a_waiting_task_id_is_already_exists(client: Client, make_queue: MakeQueue) -> None:
    queue = make_queue()
    task = http_task("http://127.0.0.1:9/", f"{queue}/tasks/dup", schedule_time=soon())
    client.create_task(parent=queue, task=task)
    with pytest.raises(exceptions.AlreadyExists):
        client.create_task(parent=queue, task=task)


def test_an_id_that_ran_is_already_exists(
    client: Client, make_queue: MakeQueue, target: RecordingTarget
) -> None:
    queue = make_queue()
    path = f"/ran/{new_id()}"
    name = f"{queue}/tasks/ran"
    client.create_task(parent=queue, task=http_task(target.url(path), name))
    target.wait(path, 1)
    wait_gone(client, name)
    with pytest.raises(exceptions.AlreadyExists):
        client.create_task(parent=queue, task=http_task(target.url(path), name))


@go_disagrees("GetTask of a finished task answers FAILED_PRECONDITION")
def test_get_of_a_task_that_ran_is_not_found(
    client: Client, make_queue: MakeQueue, target: RecordingTarget
) -> None:
    queue = make_queue()
    path = f"/ran/{new_id()}"
    name = f"{queue}/tasks/ran"
    client.create_task(parent=queue, task=http_task(target.url(path), name))
    target.wait(path, 1)
    assert isinstance(wait_gone(client, name), exceptions.NotFound)


def test_an_id_that_was_deleted_is_already_exists(client: Client, make_queue: MakeQueue) -> None:
    queue = make_queue()
    task = http_task("http://127.0.0.1:9/", f"{queue}/tasks/deleted", schedule_time=soon())
    client.create_task(parent=queue, task=task)
    client.delete_task(name=task.name)
    wait_gone(client, task.name)
    with pytest.raises(exceptions.AlreadyExists):
        client.create_task(parent=queue, task=task)
    with pytest.raises(exceptions.NotFound):
        client.delete_task(name=task.name)


@go_disagrees("GetTask of a deleted task answers FAILED_PRECONDITION")
def test_get_of_a_deleted_task_is_not_found(client: Client, make_queue: MakeQueue) -> None:
    queue = make_queue()
    task = http_task("http://127.0.0.1:9/", f"{queue}/tasks/deleted", schedule_time=soon())
    client.create_task(parent=queue, task=task)
    client.delete_task(name=task.name)
    assert isinstance(wait_gone(client, task.name), exceptions.NotFound)


def test_get_of_an_unknown_task_is_not_found(client: Client, make_queue: MakeQueue) -> None:
    with pytest.raises(exceptions.NotFound):
        client.get_task(name=f"{make_queue()}/tasks/never")


@go_disagrees("ignores page_size: every task comes in one page")
def test_list_tasks_honours_page_size(client: Client, make_queue: MakeQueue) -> None:
    queue = make_queue()
    for i in range(3):
        client.create_task(
            parent=queue,
            task=http_task("http://127.0.0.1:9/", f"{queue}/tasks/t{i}", schedule_time=soon()),
        )
    first = client.list_tasks(request={"parent": queue, "page_size": 2})._response
    assert len(first.tasks) <= 2
    assert first.next_page_token
    all_names = [t.name for t in client.list_tasks(request={"parent": queue, "page_size": 2})]
    assert sorted(all_names) == [f"{queue}/tasks/t{i}" for i in range(3)]


def test_run_task_dispatches_now_even_when_paused(
    client: Client, make_queue: MakeQueue, target: RecordingTarget
) -> None:
    queue = make_queue()
    client.pause_queue(name=queue)
    path = f"/run/{new_id()}"
    name = f"{queue}/tasks/run"
    client.create_task(parent=queue, task=http_task(target.url(path), name, schedule_time=soon()))
    ran = client.run_task(name=name)
    assert ran.dispatch_count == 1
    target.wait(path, 1)
    wait_gone(client, name)


# -- dispatch -------------------------------------------------------------------------------


def test_the_request_and_cloud_tasks_headers(
    client: Client, make_queue: MakeQueue, target: RecordingTarget
) -> None:
    queue = make_queue()
    path = f"/deliver/{new_id()}"
    created = client.create_task(
        parent=queue,
        task=http_task(
            target.url(path),
            f"{queue}/tasks/deliver",
            http_method=tasks_v2.HttpMethod.PUT,
            body=b'{"n": 1}',
            headers={
                "Content-Type": "application/json",
                "X-Custom": "kept",
                "X-CloudTasks-QueueName": "forged",
            },
        ),
    )
    [request] = target.wait(path, 1)
    headers = {k.lower(): v for k, v in request.headers.items()}

    assert request.method == "PUT"
    assert request.body == b'{"n": 1}'
    assert headers["content-type"] == "application/json"
    assert headers["x-custom"] == "kept"
    assert headers["user-agent"] == "Google-Cloud-Tasks"
    assert headers["x-cloudtasks-queuename"] == queue.rsplit("/", 1)[1]
    assert headers["x-cloudtasks-taskname"] == "deliver"
    assert headers["x-cloudtasks-taskretrycount"] == "0"
    assert headers["x-cloudtasks-taskexecutioncount"] == "0"
    eta = float(headers["x-cloudtasks-tasketa"])
    assert eta == pytest.approx(created.schedule_time.timestamp(), abs=1e-3)


def test_an_oidc_token_for_the_account_and_audience(
    client: Client, make_queue: MakeQueue, target: RecordingTarget
) -> None:
    queue = make_queue()
    path = f"/oidc/{new_id()}"
    client.create_task(
        parent=queue,
        task=http_task(
            target.url(path), oidc_token=tasks_v2.OidcToken(service_account_email=ACCOUNT)
        ),
    )
    client.create_task(
        parent=queue,
        task=http_task(
            target.url(path),
            oidc_token=tasks_v2.OidcToken(
                service_account_email=ACCOUNT, audience="https://aud.example"
            ),
        ),
    )
    requests = target.wait(path, 2)
    claims = [
        jwt_claims({k.lower(): v for k, v in r.headers.items()}["authorization"].split(" ", 1)[1])
        for r in requests
    ]
    assert {c["email"] for c in claims} == {ACCOUNT}
    assert {c["aud"] for c in claims} == {target.url(path), "https://aud.example"}


@go_lacks("no OAuth token support: the request carries no Authorization header")
def test_an_oauth_token_is_sent(
    client: Client, make_queue: MakeQueue, target: RecordingTarget
) -> None:
    queue = make_queue()
    path = f"/oauth/{new_id()}"
    client.create_task(
        parent=queue,
        task=http_task(
            target.url(path), oauth_token=tasks_v2.OAuthToken(service_account_email=ACCOUNT)
        ),
    )
    [request] = target.wait(path, 1)
    headers = {k.lower(): v for k, v in request.headers.items()}
    assert headers["authorization"].startswith("Bearer ")


def test_retries_count_up_and_the_backoff_doubles(
    client: Client, make_queue: MakeQueue, target: RecordingTarget
) -> None:
    queue = make_queue(
        retry_config=tasks_v2.RetryConfig(min_backoff=datetime.timedelta(seconds=0.4))
    )
    path = f"/retry/{new_id()}"
    target.plan(path, 503, 503, then=200)
    name = f"{queue}/tasks/retry"
    client.create_task(parent=queue, task=http_task(target.url(path), name))
    requests = target.wait(path, 3)
    wait_gone(client, name)

    retry_counts = [
        {k.lower(): v for k, v in r.headers.items()}["x-cloudtasks-taskretrycount"]
        for r in requests
    ]
    assert retry_counts == ["0", "1", "2"]
    first_gap = requests[1].at - requests[0].at
    second_gap = requests[2].at - requests[1].at
    assert second_gap / first_gap == pytest.approx(2.0, rel=0.35)


@go_disagrees("X-CloudTasks-TaskExecutionCount counts 5XX answers too")
def test_execution_count_leaves_out_5xx_answers(
    client: Client, make_queue: MakeQueue, target: RecordingTarget
) -> None:
    queue = make_queue(
        retry_config=tasks_v2.RetryConfig(min_backoff=datetime.timedelta(seconds=0.1))
    )
    path = f"/exec/{new_id()}"
    target.plan(path, 503, 404, then=200)
    client.create_task(parent=queue, task=http_task(target.url(path), f"{queue}/tasks/e"))
    requests = target.wait(path, 3)
    counts = [
        {k.lower(): v for k, v in r.headers.items()}["x-cloudtasks-taskexecutioncount"]
        for r in requests
    ]
    assert counts == ["0", "0", "1"]


@go_disagrees("no linear phase: the interval stays at min_backoff * 2^max_doublings")
def test_the_backoff_grows_linearly_after_max_doublings(
    client: Client, make_queue: MakeQueue, target: RecordingTarget
) -> None:
    retry = tasks_v2.RetryConfig(
        min_backoff=datetime.timedelta(seconds=0.3),
        max_doublings=1,
        max_backoff=datetime.timedelta(seconds=60),
    )
    queue = make_queue(retry_config=retry)
    path = f"/linear/{new_id()}"
    target.plan(path, 500, 500, 500, 500, then=200)
    client.create_task(parent=queue, task=http_task(target.url(path), f"{queue}/tasks/l"))
    requests = target.wait(path, 5)
    gaps = [b.at - a.at for a, b in itertools.pairwise(requests)]
    # 0.3, 0.6, then linear steps of 0.6: 1.2, 1.8.
    assert gaps[2] / gaps[1] == pytest.approx(2.0, rel=0.25)
    assert gaps[3] / gaps[2] == pytest.approx(1.5, rel=0.25)


@go_disagrees("keeps the task after its last allowed attempt failed")
def test_a_task_is_deleted_after_its_last_attempt_fails(
    client: Client, make_queue: MakeQueue, target: RecordingTarget
) -> None:
    retry = tasks_v2.RetryConfig(max_attempts=2, min_backoff=datetime.timedelta(seconds=0.1))
    queue = make_queue(retry_config=retry)
    path = f"/fails/{new_id()}"
    target.plan(path, then=500)
    name = f"{queue}/tasks/f"
    client.create_task(parent=queue, task=http_task(target.url(path), name))
    target.wait(path, 2)
    assert isinstance(wait_gone(client, name, timeout=5), exceptions.NotFound)
    assert len(target.received(path)) == 2


@go_disagrees("max_attempts -1 (unlimited) stops after the first attempt")
def test_unlimited_attempts_keep_retrying(
    client: Client, make_queue: MakeQueue, target: RecordingTarget
) -> None:
    retry = tasks_v2.RetryConfig(max_attempts=-1, min_backoff=datetime.timedelta(seconds=0.1))
    queue = make_queue(retry_config=retry)
    path = f"/unlimited/{new_id()}"
    target.plan(path, 500, 500, then=200)
    client.create_task(parent=queue, task=http_task(target.url(path), f"{queue}/tasks/u"))
    assert len(target.wait(path, 3, timeout=10)) >= 3


@go_disagrees("ignores max_retry_duration: stops at max_attempts")
def test_max_retry_duration_extends_past_max_attempts(
    client: Client, make_queue: MakeQueue, target: RecordingTarget
) -> None:
    retry = tasks_v2.RetryConfig(
        max_attempts=1,
        max_retry_duration=datetime.timedelta(seconds=1),
        min_backoff=datetime.timedelta(seconds=0.3),
        max_backoff=datetime.timedelta(seconds=0.3),
    )
    queue = make_queue(retry_config=retry)
    path = f"/duration/{new_id()}"
    target.plan(path, then=500)
    client.create_task(parent=queue, task=http_task(target.url(path), f"{queue}/tasks/d"))
    assert len(target.wait(path, 3, timeout=10)) >= 3


def test_attempt_fields_after_a_failed_attempt(
    client: Client, make_queue: MakeQueue, target: RecordingTarget
) -> None:
    queue = make_queue(
        retry_config=tasks_v2.RetryConfig(min_backoff=datetime.timedelta(seconds=100))
    )
    path = f"/status/{new_id()}"
    target.plan(path, 404)
    name = f"{queue}/tasks/s"
    client.create_task(parent=queue, task=http_task(target.url(path), name))
    task = wait_task(client, name, lambda t: t.response_count == 1)

    assert task.dispatch_count == 1
    assert "dispatch_time" in task.first_attempt
    assert "response_status" not in task.first_attempt
    assert task.last_attempt.response_status.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert "HTTP status code 404" in task.last_attempt.response_status.message


@go_disagrees("reports a timed-out attempt as UNKNOWN, not DEADLINE_EXCEEDED")
def test_a_timed_out_attempt_is_deadline_exceeded(
    client: Client, make_queue: MakeQueue, target: RecordingTarget
) -> None:
    queue = make_queue(
        retry_config=tasks_v2.RetryConfig(min_backoff=datetime.timedelta(seconds=100))
    )
    path = f"/slow/{new_id()}"
    target.plan(path, -20)  # answers only after 20 s
    name = f"{queue}/tasks/slow"
    client.create_task(
        parent=queue,
        task=http_task(target.url(path), name, dispatch_deadline=duration_pb2.Duration(seconds=15)),
    )
    task = wait_task(client, name, lambda t: "response_status" in t.last_attempt, timeout=40)
    assert task.last_attempt.response_status.code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]


def test_a_future_task_waits_for_its_schedule_time(
    client: Client, make_queue: MakeQueue, target: RecordingTarget
) -> None:
    queue = make_queue()
    path = f"/future/{new_id()}"
    when = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=2)
    client.create_task(parent=queue, task=http_task(target.url(path), schedule_time=when))
    [request] = target.wait(path, 1)
    assert request.at >= when.timestamp() - 0.05  # same machine clock for both processes


def test_a_paused_queue_holds_tasks_until_resumed(
    client: Client, make_queue: MakeQueue, target: RecordingTarget
) -> None:
    held_queue, control_queue = make_queue(), make_queue()
    client.pause_queue(name=held_queue)
    held, control = f"/held/{new_id()}", f"/control/{new_id()}"
    client.create_task(parent=held_queue, task=http_task(target.url(held)))
    client.create_task(parent=control_queue, task=http_task(target.url(control)))
    target.wait(control, 1)
    time.sleep(0.5)  # give a wrongly running queue time to show it
    assert target.received(held) == []
    client.resume_queue(name=held_queue)
    target.wait(held, 1)


async def test_the_async_client(
    async_client: tasks_v2.CloudTasksAsyncClient, target: RecordingTarget
) -> None:
    name = f"{PARENT}/queues/{new_id('async')}"
    await async_client.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=name))
    path = f"/async/{new_id()}"
    task = await async_client.create_task(parent=name, task=http_task(target.url(path), body=b"a"))
    assert (await async_client.get_queue(name=name)).name == name
    [request] = await asyncio.to_thread(target.wait, path, 1)
    assert request.body == b"a"
    assert task.name.startswith(f"{name}/tasks/")
    await async_client.delete_queue(name=name)
