"""Cloud Tasks conformance, dispatch: the HTTP request, tokens, retries, deadlines, limits.

Why: a GcpTask is only useful if Cloud Tasks calls its target as Google does - method,
headers, body, Cloud Tasks' own headers and a token the receiver can verify - and retries,
gives up and deletes tasks as the queue's RetryConfig says. Each test sends tasks to a
local recording target through the official client and checks the request and the task's
fate; retry timing is read from the emulator's clock (ordering and ratios, never the wall
clock).
"""

from __future__ import annotations

import datetime
import itertools
import json
from typing import Any

import pytest
from google.api_core import exceptions
from google.auth.transport import requests as google_requests
from google.cloud import tasks_v2
from google.oauth2 import id_token
from google.protobuf import duration_pb2

from tests.emulator.conftest import PARENT, RunningEmulator
from tests.emulator.target import Reply, TargetServer
from tests.emulator.tasks_conftest import (
    attempts,
    clock_now,
    http_task,
    new_queue_id,
    queue_name,
    wait_outcome,
    wait_outcome_async,
)

ACCOUNT = "runner@test-project.iam.gserviceaccount.com"
Client = tasks_v2.CloudTasksClient


def make_queue(client: Client, **fields: Any) -> str:
    name = queue_name(new_queue_id())
    client.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=name, **fields))
    return name


def advance(emulator: RunningEmulator, seconds: float) -> None:
    status, _ = emulator.admin("POST", "/clock/advance", {"seconds": seconds})
    assert status == 200


def test_the_request_carries_method_headers_body_and_cloud_tasks_headers(
    tasks_client: Client, emulator: RunningEmulator, target: TargetServer
) -> None:
    queue = make_queue(tasks_client)
    name = f"{queue}/tasks/delivery"
    created = tasks_client.create_task(
        parent=queue,
        task=http_task(
            target.url("/hook?x=1"),
            name=name,
            http_method=tasks_v2.HttpMethod.PUT,
            body=b'{"n": 1}',
            headers={
                "Content-Type": "application/json",
                "X-Custom": "kept",
                # Reserved: "Any header that is prefixed with X-CloudTasks- will be treated
                # as service header"; User-Agent "will be set to Google-Cloud-Tasks".
                "X-CloudTasks-QueueName": "forged",
                "User-Agent": "mine",
            },
        ),
    )

    [request] = target.wait_for(1)

    assert request.method == "PUT"
    assert request.path == "/hook"
    assert request.query == {"x": "1"}
    assert request.body == b'{"n": 1}'
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-Custom"] == "kept"
    assert request.headers["User-Agent"] == "Google-Cloud-Tasks"
    assert request.headers["X-CloudTasks-QueueName"] == queue.rsplit("/", 1)[1]
    assert request.headers["X-CloudTasks-TaskName"] == "delivery"
    assert request.headers["X-CloudTasks-TaskRetryCount"] == "0"
    assert request.headers["X-CloudTasks-TaskExecutionCount"] == "0"
    eta = float(request.headers["X-CloudTasks-TaskETA"])
    assert eta == pytest.approx(created.schedule_time.timestamp(), abs=2e-6)
    assert "X-CloudTasks-TaskPreviousResponse" not in request.headers
    assert "Authorization" not in request.headers
    assert wait_outcome(emulator, name)["outcome"] == "succeeded"


def test_an_oidc_token_verifies_against_the_emulator_certs(
    tasks_client: Client, emulator: RunningEmulator, target: TargetServer
) -> None:
    queue = make_queue(tasks_client)
    url = target.url("/oidc")
    tasks_client.create_task(
        parent=queue,
        task=http_task(url, oidc_token=tasks_v2.OidcToken(service_account_email=ACCOUNT)),
    )
    tasks_client.create_task(
        parent=queue,
        task=http_task(
            url,
            oidc_token=tasks_v2.OidcToken(
                service_account_email=ACCOUNT, audience="https://my-service.example"
            ),
        ),
    )

    requests = target.wait_for(2)
    audiences = set()
    for request in requests:
        token = request.bearer_token
        assert token is not None
        # The receiver's own verification, pointed at the emulator's certs endpoint.
        claims = id_token.verify_token(
            token,
            google_requests.Request(),
            audience=None,
            certs_url=f"{emulator.http_url}/oauth2/v1/certs",
        )
        assert claims["email"] == ACCOUNT
        assert claims["email_verified"] is True
        audiences.add(claims["aud"])
    # OidcToken.audience: "If not specified, the URI specified in target will be used."
    assert audiences == {url, "https://my-service.example"}


def test_an_oauth_token_belongs_to_the_account_and_scope(
    tasks_client: Client, emulator: RunningEmulator, target: TargetServer
) -> None:
    # (Crosscheck: the Go emulator does not implement OAuthToken; it sends no token.)
    queue = make_queue(tasks_client)
    tasks_client.create_task(
        parent=queue,
        task=http_task(
            target.url("/oauth"), oauth_token=tasks_v2.OAuthToken(service_account_email=ACCOUNT)
        ),
    )

    [request] = target.wait_for(1)
    token = request.bearer_token
    assert token is not None
    # The receiver's check of an access token: Google's tokeninfo, here the emulator's.
    session = google_requests.Request()
    response = session(f"{emulator.http_url}/oauth2/v3/tokeninfo?access_token={token}")
    assert response.status == 200
    info = json.loads(response.data)
    assert info["email"] == ACCOUNT
    # OAuthToken.scope: "If not specified, "https://www.googleapis.com/auth/cloud-platform"
    # will be used."
    assert info["scope"] == "https://www.googleapis.com/auth/cloud-platform"


def test_a_future_task_waits_for_its_schedule_time(
    tasks_client: Client, emulator: RunningEmulator, target: TargetServer
) -> None:
    queue = make_queue(tasks_client)
    control_queue = make_queue(tasks_client)
    when = clock_now(emulator) + datetime.timedelta(minutes=30)
    name = f"{queue}/tasks/later"
    tasks_client.create_task(
        parent=queue, task=http_task(target.url("/later"), name=name, schedule_time=when)
    )
    # A task due now in another queue: once it arrived, the loop has looked at both.
    tasks_client.create_task(parent=control_queue, task=http_task(target.url("/now")))
    target.wait_for(1)
    assert [r.path for r in target.requests] == ["/now"]
    assert attempts(emulator, name)["attempts"] == []

    advance(emulator, 30 * 60)
    requests = target.wait_for(2)

    assert requests[1].path == "/later"
    assert float(requests[1].headers["X-CloudTasks-TaskETA"]) == pytest.approx(
        when.timestamp(), abs=2e-6
    )
    history = wait_outcome(emulator, name)
    assert history["attempts"][0]["dispatch_timestamp"] >= when.timestamp()


def test_retries_follow_the_reference_backoff_then_the_task_is_deleted(
    tasks_client: Client, emulator: RunningEmulator, target: TargetServer
) -> None:
    retry = tasks_v2.RetryConfig(
        max_attempts=7,
        min_backoff=datetime.timedelta(seconds=1),
        max_backoff=datetime.timedelta(seconds=10),
        max_doublings=2,
    )
    queue = make_queue(tasks_client, retry_config=retry)
    target.default = Reply(status=500)
    name = f"{queue}/tasks/always-fails"
    tasks_client.create_task(parent=queue, task=http_task(target.url("/fail"), name=name))

    for attempt in range(1, 7):
        wait_outcome(emulator, name, attempts_at_least=attempt)
        advance(emulator, 60)  # beyond any backoff: the next retry is due
    history = wait_outcome(emulator, name)

    # RetryConfig: the interval "starts at min_backoff, then doubles max_doublings times,
    # then increases linearly, and finally retries at intervals of max_backoff":
    # 1, 2, 4, then +4 each time (8, 12 -> capped at 10), then 10. (Crosscheck
    # disagreement: the Go emulator has no linear phase; it stays at 4 until max_backoff.)
    tried = history["attempts"]
    gaps = [
        later["schedule_timestamp"] - earlier["response_timestamp"]
        for earlier, later in itertools.pairwise(tried)
    ]
    assert gaps == pytest.approx([1, 2, 4, 8, 10, 10], abs=1e-3)
    assert all(a["dispatch_timestamp"] >= a["schedule_timestamp"] for a in tried)
    # Deleted after the last allowed attempt failed (Cloud Tasks behaviour: "no further
    # attempts will be made and the task will be deleted"). (Crosscheck disagreement: the
    # Go emulator keeps the task, GetTask still returns it.)
    assert history["outcome"] == "failed"
    assert len(tried) == 7
    assert [a["code"] for a in tried] == ["INTERNAL"] * 7
    requests = target.requests
    assert [r.headers["X-CloudTasks-TaskRetryCount"] for r in requests] == [
        str(n) for n in range(7)
    ]
    # X-CloudTasks-TaskExecutionCount "does not include failures due to 5XX error codes".
    # (Crosscheck disagreement: the Go emulator counts every response.)
    assert {r.headers["X-CloudTasks-TaskExecutionCount"] for r in requests} == {"0"}
    assert [r.headers.get("X-CloudTasks-TaskPreviousResponse") for r in requests] == [
        None,
        *["500"] * 6,
    ]
    with pytest.raises(exceptions.NotFound, match="existed recently"):
        tasks_client.get_task(name=name)
    with pytest.raises(exceptions.AlreadyExists):
        tasks_client.create_task(parent=queue, task=http_task(target.url("/fail"), name=name))


def test_attempt_counts_and_status_while_a_task_retries(
    tasks_client: Client, emulator: RunningEmulator, target: TargetServer
) -> None:
    retry = tasks_v2.RetryConfig(min_backoff=datetime.timedelta(seconds=100))
    queue = make_queue(tasks_client, retry_config=retry)
    target.reply(404, 200)
    name = f"{queue}/tasks/retried"
    tasks_client.create_task(parent=queue, task=http_task(target.url("/x"), name=name))
    history = wait_outcome(emulator, name, attempts_at_least=1)

    task = tasks_client.get_task(name=name)

    first = history["attempts"][0]
    assert task.dispatch_count == 1
    assert task.response_count == 1
    assert task.first_attempt.dispatch_time.timestamp() == pytest.approx(
        first["dispatch_timestamp"], abs=2e-6
    )
    # first_attempt: "Only dispatch_time will be set."
    assert "response_time" not in task.first_attempt
    assert "response_status" not in task.first_attempt
    assert task.last_attempt.response_status.code == 5  # NOT_FOUND for HTTP 404
    assert task.last_attempt.response_status.message == "NOT_FOUND(5): HTTP status code 404"
    assert task.last_attempt.response_time.timestamp() == pytest.approx(
        first["response_timestamp"], abs=2e-6
    )
    assert task.schedule_time.timestamp() == pytest.approx(
        first["response_timestamp"] + 100, abs=1e-3
    )

    advance(emulator, 101)
    history = wait_outcome(emulator, name)

    assert history["outcome"] == "succeeded"
    second = target.requests[1]
    assert second.headers["X-CloudTasks-TaskRetryCount"] == "1"
    assert second.headers["X-CloudTasks-TaskExecutionCount"] == "1"  # the 404 counts
    assert second.headers["X-CloudTasks-TaskPreviousResponse"] == "404"


def test_quick_retries_in_real_time_until_success(
    tasks_client: Client, emulator: RunningEmulator, target: TargetServer
) -> None:
    retry = tasks_v2.RetryConfig(min_backoff=datetime.timedelta(seconds=0.05))
    queue = make_queue(tasks_client, retry_config=retry)
    target.reply(503, 503, 200)
    name = f"{queue}/tasks/flaky"
    tasks_client.create_task(parent=queue, task=http_task(target.url("/flaky"), name=name))

    history = wait_outcome(emulator, name)

    assert history["outcome"] == "succeeded"
    assert [a["http_status"] for a in history["attempts"]] == [503, 503, 200]
    assert [a["code"] for a in history["attempts"]] == ["UNAVAILABLE", "UNAVAILABLE", "OK"]
    arrivals = [r.received_at for r in target.requests]
    assert arrivals == sorted(arrivals)
    gaps = [
        b["dispatch_timestamp"] - a["response_timestamp"]
        for a, b in itertools.pairwise(history["attempts"])
    ]
    assert gaps[0] >= 0.05
    assert gaps[1] >= 0.1  # the backoff doubled


def test_max_retry_duration_and_max_attempts_must_both_be_reached(
    tasks_client: Client, emulator: RunningEmulator, target: TargetServer
) -> None:
    # RetryConfig.max_retry_duration: "Once max_retry_duration time has passed *and* the
    # task has been attempted max_attempts times, no further attempts will be made".
    # (Crosscheck disagreement: the Go emulator ignores max_retry_duration.)
    retry = tasks_v2.RetryConfig(
        max_attempts=2,
        max_retry_duration=datetime.timedelta(seconds=300),
        min_backoff=datetime.timedelta(seconds=100),
        max_backoff=datetime.timedelta(seconds=100),
    )
    queue = make_queue(tasks_client, retry_config=retry)
    target.default = Reply(status=500)
    name = f"{queue}/tasks/duration"
    tasks_client.create_task(parent=queue, task=http_task(target.url("/d"), name=name))

    for attempt in range(1, 4):
        wait_outcome(emulator, name, attempts_at_least=attempt)
        assert attempts(emulator, name)["outcome"] == "pending"
        advance(emulator, 100)
    history = wait_outcome(emulator, name)

    assert history["outcome"] == "failed"
    first = history["attempts"][0]["dispatch_timestamp"]
    assert len(history["attempts"]) == 4  # the first failure at or after 300 s ended it
    assert history["attempts"][2]["response_timestamp"] - first < 300
    assert history["attempts"][3]["response_timestamp"] - first >= 300


def test_unlimited_attempts_retry_until_success(
    tasks_client: Client, emulator: RunningEmulator, target: TargetServer
) -> None:
    # RetryConfig.max_attempts: "-1 indicates unlimited attempts." (Crosscheck
    # disagreement: the Go emulator stops after the first attempt, as dispatch_count >= -1.)
    retry = tasks_v2.RetryConfig(max_attempts=-1, min_backoff=datetime.timedelta(seconds=0.05))
    queue = make_queue(tasks_client, retry_config=retry)
    target.reply(500, 500, 500, 200)
    name = f"{queue}/tasks/unlimited"
    tasks_client.create_task(parent=queue, task=http_task(target.url("/u"), name=name))

    history = wait_outcome(emulator, name)

    assert history["outcome"] == "succeeded"
    assert [a["http_status"] for a in history["attempts"]] == [500, 500, 500, 200]


def test_a_task_retry_config_overrides_the_queue(
    tasks_client: Client, emulator: RunningEmulator, target: TargetServer
) -> None:
    queue = make_queue(tasks_client)
    target.default = Reply(status=500)
    name = f"{queue}/tasks/once"
    created = tasks_client.create_task(
        parent=queue,
        task=http_task(
            target.url("/once"), name=name, retry_config=tasks_v2.RetryConfig(max_attempts=1)
        ),
    )
    assert created.retry_config.max_attempts == 1

    history = wait_outcome(emulator, name)

    assert history["outcome"] == "failed"
    assert len(history["attempts"]) == 1


def test_the_dispatch_deadline_cuts_a_hanging_attempt(
    tasks_client: Client, emulator: RunningEmulator, target: TargetServer
) -> None:
    retry = tasks_v2.RetryConfig(min_backoff=datetime.timedelta(seconds=100))
    queue = make_queue(tasks_client, retry_config=retry)
    target.reply(Reply(hang=True))
    name = f"{queue}/tasks/hangs"
    tasks_client.create_task(
        parent=queue,
        task=http_task(
            target.url("/hang"), name=name, dispatch_deadline=duration_pb2.Duration(seconds=15)
        ),
    )
    target.wait_for(1)
    assert attempts(emulator, name)["attempts"][0]["response_time"] is None

    advance(emulator, 16)  # the deadline runs on the emulator's clock
    history = wait_outcome(emulator, name, attempts_at_least=1)

    # dispatch_deadline: "the request is cancelled and the attempt is marked as a
    # DEADLINE_EXCEEDED failure". (Crosscheck disagreement: the Go emulator reports
    # UNKNOWN.)
    assert history["attempts"][0]["code"] == "DEADLINE_EXCEEDED"
    task = tasks_client.get_task(name=name)
    assert task.last_attempt.response_status.code == 4
    assert task.dispatch_count == 1
    assert task.response_count == 0  # "attempts which have received a response"


def test_an_unreachable_target_is_unavailable(
    tasks_client: Client, emulator: RunningEmulator, target: TargetServer
) -> None:
    retry = tasks_v2.RetryConfig(max_attempts=1)
    queue = make_queue(tasks_client, retry_config=retry)
    name = f"{queue}/tasks/unreachable"
    # Port 9 (discard) has no listener on the test machine's loopback.
    tasks_client.create_task(parent=queue, task=http_task("http://127.0.0.1:9/", name=name))

    history = wait_outcome(emulator, name)

    assert history["outcome"] == "failed"
    assert history["attempts"][0]["code"] == "UNAVAILABLE"
    assert history["attempts"][0]["http_status"] is None


def test_a_paused_queue_holds_its_tasks_until_resumed(
    tasks_client: Client, emulator: RunningEmulator, target: TargetServer
) -> None:
    queue = make_queue(tasks_client)
    control_queue = make_queue(tasks_client)
    tasks_client.pause_queue(name=queue)
    name = f"{queue}/tasks/held"
    tasks_client.create_task(parent=queue, task=http_task(target.url("/held"), name=name))
    advance(emulator, 3600)
    tasks_client.create_task(parent=control_queue, task=http_task(target.url("/control")))
    target.wait_for(1)

    assert [r.path for r in target.requests] == ["/control"]
    assert tasks_client.get_task(name=name).dispatch_count == 0

    tasks_client.resume_queue(name=queue)
    requests = target.wait_for(2)

    assert requests[1].path == "/held"
    assert wait_outcome(emulator, name)["outcome"] == "succeeded"


def test_max_dispatches_per_second_spaces_the_dispatches(
    tasks_client: Client, emulator: RunningEmulator, target: TargetServer
) -> None:
    rate = 5.0
    queue = make_queue(
        tasks_client, rate_limits=tasks_v2.RateLimits(max_dispatches_per_second=rate)
    )
    names = [f"{queue}/tasks/r{i}" for i in range(8)]
    tasks_client.pause_queue(name=queue)  # all due at once when resumed
    for name in names:
        tasks_client.create_task(parent=queue, task=http_task(target.url("/r"), name=name))
    tasks_client.resume_queue(name=queue)

    dispatched = sorted(
        wait_outcome(emulator, name)["attempts"][0]["dispatch_timestamp"] for name in names
    )

    # A bucket of max_burst_size (5 at 5/s) refilled at the rate: the k-th dispatch (from
    # 0) comes at least (k + 1 - burst) / rate after the first.
    burst = tasks_client.get_queue(name=queue).rate_limits.max_burst_size
    assert burst == 5
    for k, when in enumerate(dispatched):
        assert when - dispatched[0] >= (k + 1 - burst) / rate - 1e-3


def test_max_concurrent_dispatches_waits_for_a_free_slot(
    tasks_client: Client, emulator: RunningEmulator, target: TargetServer
) -> None:
    retry = tasks_v2.RetryConfig(max_attempts=1)
    limits = tasks_v2.RateLimits(max_concurrent_dispatches=1)
    queue = make_queue(tasks_client, retry_config=retry, rate_limits=limits)
    target.reply(Reply(hang=True))
    deadline = duration_pb2.Duration(seconds=15)
    first, second = f"{queue}/tasks/first", f"{queue}/tasks/second"
    tasks_client.create_task(
        parent=queue, task=http_task(target.url("/1"), name=first, dispatch_deadline=deadline)
    )
    target.wait_for(1)
    tasks_client.create_task(
        parent=queue, task=http_task(target.url("/2"), name=second, dispatch_deadline=deadline)
    )
    control_queue = make_queue(tasks_client)
    tasks_client.create_task(parent=control_queue, task=http_task(target.url("/control")))
    target.wait_for(2)
    assert attempts(emulator, second)["attempts"] == []

    advance(emulator, 16)  # the hanging attempt times out and frees the slot
    done_first = wait_outcome(emulator, first)
    done_second = wait_outcome(emulator, second)

    assert done_second["outcome"] == "succeeded"
    assert (
        done_second["attempts"][0]["dispatch_timestamp"]
        >= done_first["attempts"][0]["response_timestamp"]
    )


def test_the_admin_api_makes_tasks_due_and_reports_history(
    tasks_client: Client, emulator: RunningEmulator, target: TargetServer
) -> None:
    queue = make_queue(tasks_client)
    name = f"{queue}/tasks/admin"
    when = clock_now(emulator) + datetime.timedelta(days=2)
    tasks_client.create_task(
        parent=queue, task=http_task(target.url("/admin"), name=name, schedule_time=when)
    )

    status, body = emulator.admin("POST", "/tasks/due", {"task": name})
    assert (status, body) == (200, {"count": 1})
    target.wait_for(1)
    history = wait_outcome(emulator, name)

    assert history["outcome"] == "succeeded"
    assert history["queue"] == queue
    _, listing = emulator.admin("GET", f"/tasks/attempts?queue={queue}")
    assert [h["task"] for h in listing["tasks"]] == [name]
    status, missing = emulator.admin("GET", f"/tasks/attempts?task={queue}/tasks/nope")
    assert status == 404
    assert "error" in missing
    status, _ = emulator.admin("POST", "/tasks/due", {})
    assert status == 400
    status, _ = emulator.admin("POST", "/tasks/settings", {"task_tombstone_seconds": -1})
    assert status == 400


def test_faults_and_the_call_log_cover_the_tasks_rpcs(
    tasks_client: Client, emulator: RunningEmulator
) -> None:
    queue = make_queue(tasks_client)
    with pytest.raises(exceptions.AlreadyExists):
        tasks_client.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=queue))
    status, _ = emulator.admin(
        "POST", "/faults", {"method": "GetQueue", "code": "UNAVAILABLE", "rate": 0.5}
    )
    assert status == 200

    def outcomes() -> list[bool]:
        results = []
        for _ in range(200):
            try:
                tasks_client.get_queue(name=queue, retry=None)
                results.append(True)
            except exceptions.ServiceUnavailable:
                results.append(False)
        return results

    emulator.admin("POST", "/faults/seed", {"seed": 7})
    first = outcomes()
    emulator.admin("POST", "/faults/seed", {"seed": 7})
    second = outcomes()

    assert first == second  # deterministic under a seed
    assert 70 <= first.count(False) <= 130  # 50 % within tolerance
    _, log = emulator.admin("GET", "/calls?service=google.cloud.tasks.v2.CloudTasks")
    codes = [(c["method"], c["code"]) for c in log["calls"]]
    assert codes[:2] == [("CreateQueue", "OK"), ("CreateQueue", "ALREADY_EXISTS")]
    get_codes = [code for method, code in codes if method == "GetQueue"]
    assert len(get_codes) == 400
    assert get_codes.count("UNAVAILABLE") == 2 * first.count(False)


async def test_dispatch_through_the_async_client(
    tasks_async_client: tasks_v2.CloudTasksAsyncClient,
    emulator: RunningEmulator,
    target: TargetServer,
) -> None:
    name = queue_name(new_queue_id())
    await tasks_async_client.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=name))
    task = await tasks_async_client.create_task(
        parent=name, task=http_task(target.url("/async"), body=b"async body")
    )

    [request] = await target.wait_for_async(1)
    history = await wait_outcome_async(emulator, task.name)

    assert request.body == b"async body"
    assert request.headers["X-CloudTasks-TaskName"] == task.name.rsplit("/", 1)[1]
    assert history["outcome"] == "succeeded"
    with pytest.raises(exceptions.NotFound):
        await tasks_async_client.get_task(name=task.name)
