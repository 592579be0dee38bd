"""Every header Cloud Scheduler and Cloud Tasks put on a dispatch, and the ID tokens they mint.

Why: the relay decides from these headers which run or which attempt it is looking at
(X-CloudScheduler-ScheduleTime, X-CloudTasks-TaskRetryCount/-ExecutionCount) and trusts
the caller only through the OIDC token. Each expectation below quotes the reference it
comes from (HttpTarget / HttpRequest in google-cloud-scheduler and google-cloud-tasks,
Cloud Tasks' "Creating HTTP Target tasks"); where the references are silent the test says
what the emulator chose.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import re
import urllib.request
import zoneinfo
from typing import Any

import google.auth.transport.requests
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from google.cloud import scheduler_v1, tasks_v2
from google.oauth2 import id_token

from tests.emulator.conftest import PARENT, RunningEmulator
from tests.emulator.target import RecordedRequest, Reply, TargetServer
from tests.emulator.tasks_conftest import attempts, clock_now, new_queue_id, queue_name

ACCOUNT = "runner@test-project.iam.gserviceaccount.com"
SCHEDULE_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(Z|[+-]\d\d:\d\d)")


def job(job_id: str, uri: str, zone: str = "Etc/UTC", **http: Any) -> scheduler_v1.Job:
    return scheduler_v1.Job(
        name=f"{PARENT}/jobs/{job_id}",
        schedule="0 6 * * *",
        time_zone=zone,
        http_target=scheduler_v1.HttpTarget(uri=uri, **http),
    )


def decode(part: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


async def test_a_scheduled_run_carries_cloud_scheduler_s_headers(
    emulator: RunningEmulator,
    target: TargetServer,
    scheduler_async_client: scheduler_v1.CloudSchedulerAsyncClient,
) -> None:
    created = await scheduler_async_client.create_job(
        parent=PARENT,
        job=job(
            "nightly",
            target.url("/hook"),
            headers={
                "User-Agent": "mine",
                "X-CloudScheduler": "false",
                "X-CloudScheduler-JobName": "forged",
                "X-Custom": "kept",
            },
        ),
    )

    await emulator.admin_async("POST", "/scheduler/fire", {"job": created.name, "wait": True})
    [request] = target.requests

    headers = request.headers
    assert headers["User-Agent"] == "Google-Cloud-Scheduler"  # "will be set to"
    assert headers["X-CloudScheduler"] == "true"  # "will be set to true"
    assert headers["X-CloudScheduler-JobName"] == "nightly"  # "will contain the job name"
    assert headers["X-Custom"] == "kept"
    # Host "computed by Cloud Scheduler and derived from uri"; Content-Length computed
    assert headers["Host"] == f"127.0.0.1:{target.port}"
    assert headers["Content-Length"] == "0"
    assert "Content-Type" not in headers  # set only for a body
    assert "Authorization" not in headers
    # "the job schedule as an offset of UTC parsed according to RFC3339": the cron time of
    # this run, whole seconds, "Z" for a job in UTC
    sent = headers["X-CloudScheduler-ScheduleTime"]
    assert SCHEDULE_TIME.fullmatch(sent)
    assert sent.endswith("Z")
    assert datetime.datetime.fromisoformat(sent) == created.schedule_time


async def test_a_forced_run_carries_the_time_it_was_forced_in_the_job_s_zone(
    emulator: RunningEmulator,
    target: TargetServer,
    scheduler_async_client: scheduler_v1.CloudSchedulerAsyncClient,
) -> None:
    zone = zoneinfo.ZoneInfo("America/New_York")
    created = await scheduler_async_client.create_job(
        parent=PARENT, job=job("forced", target.url(), zone="America/New_York")
    )

    before = await asyncio.to_thread(clock_now, emulator)
    await scheduler_async_client.run_job(name=created.name)
    [request] = await target.wait_for_async(1)
    after = await asyncio.to_thread(clock_now, emulator)

    sent_text = request.headers["X-CloudScheduler-ScheduleTime"]
    assert SCHEDULE_TIME.fullmatch(sent_text)
    sent = datetime.datetime.fromisoformat(sent_text)
    assert sent.utcoffset() == before.astimezone(zone).utcoffset()
    assert before.replace(microsecond=0) <= sent <= after  # RunJob's time, not the cron's
    assert sent != created.schedule_time


def test_every_cloud_tasks_header_through_retries(
    tasks_client: tasks_v2.CloudTasksClient, emulator: RunningEmulator, target: TargetServer
) -> None:
    queue = queue_name(new_queue_id())
    tasks_client.create_queue(
        parent=PARENT,
        queue=tasks_v2.Queue(
            name=queue,
            retry_config=tasks_v2.RetryConfig(min_backoff=datetime.timedelta(seconds=0.05)),
        ),
    )
    # 503 (never reached execution), 404 (a response), no response (deadline), then 200
    target.reply(503, 404, Reply(hang=True), 200)
    task = tasks_client.create_task(
        parent=queue,
        task=tasks_v2.Task(
            http_request=tasks_v2.HttpRequest(url=target.url("/work"), body=b"payload"),
            dispatch_deadline=datetime.timedelta(seconds=15),
        ),
    )
    target.wait_for(3)
    status, _ = emulator.admin("POST", "/clock/advance", {"seconds": 16})
    assert status == 200
    requests = target.wait_for(4)
    history = attempts(emulator, task.name)

    def header(name: str) -> list[str | None]:
        return [r.headers.get(name) for r in requests]

    assert header("User-Agent") == ["Google-Cloud-Tasks"] * 4
    # "Content-Type won't be set by Cloud Tasks" (the task sets none)
    assert header("Content-Type") == [None] * 4
    assert header("X-CloudTasks-QueueName") == [queue.rsplit("/", 1)[1]] * 4
    # "or, if no name was specified at creation, a unique system-generated id"
    assert header("X-CloudTasks-TaskName") == [task.name.rsplit("/", 1)[1]] * 4
    assert re.fullmatch(r"\d+", task.name.rsplit("/", 1)[1])
    # "For the first attempt, this value is 0. This number includes attempts where the task
    # failed due to 5XX error codes"
    assert header("X-CloudTasks-TaskRetryCount") == ["0", "1", "2", "3"]
    # "received a response from the handler ... does not include failures due to 5XX"
    assert header("X-CloudTasks-TaskExecutionCount") == ["0", "0", "1", "1"]
    # "The HTTP response code from the previous retry" (none after the deadline)
    assert header("X-CloudTasks-TaskPreviousResponse") == [None, "503", "404", None]
    # "The reason for retrying the task": values undocumented; the previous attempt's status
    assert header("X-CloudTasks-TaskRetryReason") == [
        None,
        "UNAVAILABLE(14): HTTP status code 503",
        "NOT_FOUND(5): HTTP status code 404",
        "DEADLINE_EXCEEDED(4): deadline exceeded",
    ]
    # "The schedule time of the task, specified in seconds since January 1st 1970"
    etas = [float(value or "nan") for value in header("X-CloudTasks-TaskETA")]
    assert etas == pytest.approx([a["schedule_timestamp"] for a in history["attempts"]], abs=2e-6)
    assert all(re.fullmatch(r"\d+\.\d{6}", value or "") for value in header("X-CloudTasks-TaskETA"))
    assert [r.body for r in requests] == [b"payload"] * 4


def oidc_claims(emulator: RunningEmulator, request: RecordedRequest, audience: str) -> Any:
    """Verify as a receiver does: google-auth against the emulator's certs URL."""
    token = request.bearer_token
    assert token is not None
    return id_token.verify_token(
        token,
        google.auth.transport.requests.Request(),
        audience=audience,
        certs_url=f"{emulator.http_url}/oauth2/v1/certs",
    )


def check_google_id_token(emulator: RunningEmulator, token: str, audience: str) -> None:
    """The header and claims of a Google-signed service-account ID token."""
    header_part, claims_part, _ = token.split(".")
    header, claims = decode(header_part), decode(claims_part)
    assert header == {"alg": "RS256", "kid": emulator.emulator.tokens.key_id, "typ": "JWT"}
    # the kid names the key at both certs URLs (PEM at v1, a JWK Set at v3)
    with urllib.request.urlopen(f"{emulator.http_url}/oauth2/v1/certs", timeout=30) as response:
        pem = json.loads(response.read())[header["kid"]]
    with urllib.request.urlopen(f"{emulator.http_url}/oauth2/v3/certs", timeout=30) as response:
        [jwk] = [k for k in json.loads(response.read())["keys"] if k["kid"] == header["kid"]]
    key = x509.load_pem_x509_certificate(pem.encode()).public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    numbers = key.public_numbers()
    assert (jwk["kty"], jwk["alg"], jwk["use"]) == ("RSA", "RS256", "sig")
    assert int.from_bytes(base64.urlsafe_b64decode(jwk["n"] + "=="), "big") == numbers.n
    assert int.from_bytes(base64.urlsafe_b64decode(jwk["e"] + "=="), "big") == numbers.e
    assert set(claims) == {"aud", "azp", "email", "email_verified", "exp", "iat", "iss", "sub"}
    assert claims["iss"] == "https://accounts.google.com"
    assert claims["aud"] == audience
    assert claims["email"] == ACCOUNT
    assert claims["email_verified"] is True
    # a service account's ID token names its numeric unique id as both sub and azp
    assert re.fullmatch(r"\d{21}", claims["sub"])
    assert claims["azp"] == claims["sub"]
    assert claims["exp"] - claims["iat"] == 3600


async def test_scheduler_oidc_tokens_are_google_id_tokens(
    emulator: RunningEmulator,
    target: TargetServer,
    scheduler_async_client: scheduler_v1.CloudSchedulerAsyncClient,
) -> None:
    uri = target.url("/oidc?x=1")
    created = await scheduler_async_client.create_job(
        parent=PARENT,
        job=job("oidc", uri, oidc_token=scheduler_v1.OidcToken(service_account_email=ACCOUNT)),
    )
    await scheduler_async_client.run_job(name=created.name)
    [request] = await target.wait_for_async(1)

    # OidcToken.audience: "If not specified, the URI specified in target will be used."
    claims = await asyncio.to_thread(oidc_claims, emulator, request, uri)
    await asyncio.to_thread(check_google_id_token, emulator, request.bearer_token or "", uri)
    assert claims["email"] == ACCOUNT


def test_tasks_oidc_tokens_are_google_id_tokens(
    tasks_client: tasks_v2.CloudTasksClient, emulator: RunningEmulator, target: TargetServer
) -> None:
    queue = queue_name(new_queue_id())
    tasks_client.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=queue))
    tasks_client.create_task(
        parent=queue,
        task=tasks_v2.Task(
            http_request=tasks_v2.HttpRequest(
                url=target.url("/relay"),
                oidc_token=tasks_v2.OidcToken(
                    service_account_email=ACCOUNT, audience="https://relay.example"
                ),
            )
        ),
    )
    [request] = target.wait_for(1)

    claims = oidc_claims(emulator, request, "https://relay.example")
    check_google_id_token(emulator, request.bearer_token or "", "https://relay.example")
    assert claims["aud"] == "https://relay.example"
    with pytest.raises(ValueError, match="audience"):
        oidc_claims(emulator, request, target.url("/relay"))
