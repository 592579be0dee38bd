"""Cloud Scheduler conformance: job execution against a local HTTP target.

Why: a ScheduledGcpCall is only useful if the job's request arrives as Cloud Scheduler
sends it (method, headers, body, a token the receiver can verify), and if the job's
`status`/`last_attempt_time` report the outcome the way the operator reads them. Runs are
triggered with RunJob, the clock hook or the admin "fire" route, never by waiting.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import itertools
import json
import zoneinfo
from collections.abc import Callable
from typing import Any

import google.auth.transport.requests
import pytest
import requests
from google.cloud import scheduler_v1
from google.oauth2 import id_token
from multidict import CIMultiDict, CIMultiDictProxy

from tests.emulator.conftest import PARENT, RunningEmulator, SchedulerApi
from tests.emulator.target import RecordedRequest, Reply, TargetServer

SERVICE_ACCOUNT = "runner@test-project.iam.gserviceaccount.com"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"


def seconds(value: float) -> datetime.timedelta:
    return datetime.timedelta(seconds=value)


def target_job(job_id: str, uri: str, **http: Any) -> scheduler_v1.Job:
    """A yearly job (it never fires by itself during a test) pointing at `uri`."""
    retry = http.pop("retry_config", None)
    deadline = http.pop("attempt_deadline", None)
    job = scheduler_v1.Job(
        name=f"{PARENT}/jobs/{job_id}",
        schedule="0 0 1 1 *",
        time_zone="Etc/UTC",
        http_target=scheduler_v1.HttpTarget(uri=uri, **http),
    )
    if retry is not None:
        job.retry_config = retry
    if deadline is not None:
        job.attempt_deadline = deadline
    return job


async def job_when(
    scheduler: SchedulerApi, name: str, ready: Callable[[scheduler_v1.Job], bool]
) -> scheduler_v1.Job:
    """Poll GetJob until `ready(job)`; fails after a generous bound (not a speed check)."""
    for _ in range(1000):
        job: scheduler_v1.Job = await scheduler.get_job(name=name)
        if ready(job):
            return job
        await asyncio.sleep(0.02)
    raise AssertionError(f"job {name} never became ready: {job}")


def attempts(emulator: RunningEmulator, name: str) -> list[dict[str, Any]]:
    status, body = emulator.admin("GET", f"/scheduler/attempts?job={name}")
    assert status == 200
    result: list[dict[str, Any]] = body["attempts"]
    return result


def verify_oidc(emulator: RunningEmulator, request: RecordedRequest, audience: str) -> Any:
    """Verify the request's bearer ID token as a receiver does, against the emulator's certs."""
    token = request.bearer_token
    assert token is not None
    return id_token.verify_token(
        token,
        google.auth.transport.requests.Request(),
        audience=audience,
        certs_url=f"{emulator.http_url}/oauth2/v1/certs",
    )


async def test_run_job_sends_the_request_cloud_scheduler_sends(
    scheduler: SchedulerApi, emulator: RunningEmulator, target: TargetServer
) -> None:
    uri = target.url("/hook?source=emulator")
    job = target_job(
        "full-request",
        uri,
        http_method=scheduler_v1.HttpMethod.PUT,
        headers={"X-Custom": "value", "Content-Type": "application/json", "User-Agent": "me"},
        body=b'{"hello": "world"}',
        oidc_token=scheduler_v1.OidcToken(service_account_email=SERVICE_ACCOUNT),
    )
    created = await scheduler.create_job(parent=PARENT, job=job)

    returned = await scheduler.run_job(name=created.name)
    (request,) = await target.wait_for_async(1)

    assert returned.name == created.name
    assert request.method == "PUT"
    assert request.path == "/hook"
    assert request.query == {"source": "emulator"}
    assert request.body == b'{"hello": "world"}'
    assert request.headers["X-Custom"] == "value"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"] == "Google-Cloud-Scheduler"
    assert request.headers["X-CloudScheduler"] == "true"
    assert request.headers["X-CloudScheduler-JobName"] == "full-request"
    datetime.datetime.fromisoformat(request.headers["X-CloudScheduler-ScheduleTime"])
    claims = await asyncio.to_thread(verify_oidc, emulator, request, uri)
    assert claims["email"] == SERVICE_ACCOUNT
    assert claims["email_verified"] is True
    assert claims["iss"] == "https://accounts.google.com"
    done = await job_when(scheduler, created.name, lambda j: "status" in j)
    assert done.status.code == 0
    assert done.last_attempt_time >= created.user_update_time


async def test_oidc_audience_can_be_set(
    scheduler: SchedulerApi, emulator: RunningEmulator, target: TargetServer
) -> None:
    token = scheduler_v1.OidcToken(
        service_account_email=SERVICE_ACCOUNT, audience="https://my-service.example"
    )
    created = await scheduler.create_job(
        parent=PARENT, job=target_job("audience", target.url("/a"), oidc_token=token)
    )
    await scheduler.run_job(name=created.name)
    (request,) = await target.wait_for_async(1)

    claims = await asyncio.to_thread(verify_oidc, emulator, request, "https://my-service.example")
    assert claims["aud"] == "https://my-service.example"


def test_a_tampered_or_foreign_token_does_not_verify(emulator: RunningEmulator) -> None:
    """The certs endpoint is what makes tokens trustworthy: changes and other keys fail."""
    from gcpcall.emulator.core import TokenIssuer

    genuine = emulator.emulator.tokens.id_token(SERVICE_ACCOUNT, "https://x.example")
    header, claims, signature = genuine.split(".")
    forged_claims = (
        base64.urlsafe_b64encode(
            json.dumps(
                {**json.loads(base64.urlsafe_b64decode(claims + "==")), "email": "evil@x"}
            ).encode()
        )
        .rstrip(b"=")
        .decode()
    )
    tampered = f"{header}.{forged_claims}.{signature}"
    foreign = TokenIssuer(key_size=1024).id_token(SERVICE_ACCOUNT, "https://x.example")

    assert verify_oidc(emulator, _bearer(genuine), "https://x.example")["email"] == SERVICE_ACCOUNT
    with pytest.raises(ValueError, match="signature"):
        verify_oidc(emulator, _bearer(tampered), "https://x.example")
    with pytest.raises(ValueError, match="not found"):
        verify_oidc(emulator, _bearer(foreign), "https://x.example")
    with pytest.raises(ValueError, match="audience"):
        verify_oidc(emulator, _bearer(genuine), "https://other.example")


def _bearer(token: str) -> RecordedRequest:
    return RecordedRequest(
        method="POST",
        path="/",
        query={},
        headers=CIMultiDictProxy(CIMultiDict({"Authorization": f"Bearer {token}"})),
        body=b"",
        received_at=0.0,
    )


@pytest.mark.parametrize("scope", ["", "https://www.googleapis.com/auth/compute"])
async def test_oauth_token_is_one_the_emulator_knows(
    scheduler: SchedulerApi, emulator: RunningEmulator, target: TargetServer, scope: str
) -> None:
    token = scheduler_v1.OAuthToken(service_account_email=SERVICE_ACCOUNT, scope=scope)
    created = await scheduler.create_job(
        parent=PARENT, job=target_job("oauth", target.url("/api"), oauth_token=token)
    )
    await scheduler.run_job(name=created.name)
    (request,) = await target.wait_for_async(1)

    access_token = request.bearer_token
    assert access_token is not None
    assert access_token.startswith("ya29.")
    info = await asyncio.to_thread(_tokeninfo, emulator, access_token)
    assert info["email"] == SERVICE_ACCOUNT
    assert info["scope"] == (scope or CLOUD_PLATFORM)
    assert int(info["expires_in"]) > 0
    unknown = await asyncio.to_thread(_tokeninfo, emulator, "ya29.unknown")
    assert unknown["error"] == "invalid_token"


def _tokeninfo(emulator: RunningEmulator, token: str) -> Any:
    response = requests.get(
        f"{emulator.http_url}/oauth2/v3/tokeninfo", params={"access_token": token}, timeout=30
    )
    return response.json()


async def test_body_without_content_type_is_octet_stream_and_get_has_no_body(
    scheduler: SchedulerApi, target: TargetServer
) -> None:
    with_body = await scheduler.create_job(
        parent=PARENT, job=target_job("octets", target.url("/b"), body=b"\x00\x01")
    )
    get = await scheduler.create_job(
        parent=PARENT,
        job=target_job("get", target.url("/g"), http_method=scheduler_v1.HttpMethod.GET),
    )
    await scheduler.run_job(name=with_body.name)
    await target.wait_for_async(1)
    await scheduler.run_job(name=get.name)
    first, second = await target.wait_for_async(2)

    assert (first.method, first.body) == ("POST", b"\x00\x01")
    assert first.headers["Content-Type"] == "application/octet-stream"
    assert (second.method, second.body) == ("GET", b"")
    assert "Authorization" not in second.headers


@pytest.mark.parametrize(
    ("http_status", "code"),
    [(200, 0), (204, 0), (400, 3), (403, 7), (404, 5), (429, 8), (500, 13), (503, 14)],
)
async def test_status_reports_the_attempt_outcome(
    scheduler: SchedulerApi, target: TargetServer, http_status: int, code: int
) -> None:
    target.reply(http_status)
    created = await scheduler.create_job(parent=PARENT, job=target_job("codes", target.url()))
    await scheduler.run_job(name=created.name)

    done = await job_when(scheduler, created.name, lambda j: "status" in j)

    assert done.status.code == code
    assert "last_attempt_time" in done


async def test_unreachable_target_is_unavailable(scheduler: SchedulerApi) -> None:
    created = await scheduler.create_job(
        parent=PARENT, job=target_job("nowhere", "http://127.0.0.1:1/")
    )
    await scheduler.run_job(name=created.name)
    done = await job_when(scheduler, created.name, lambda j: "status" in j)
    assert done.status.code == 14


async def test_failed_attempts_are_retried_with_growing_backoff(
    scheduler: SchedulerApi, emulator: RunningEmulator, target: TargetServer
) -> None:
    target.reply(503, 503, 503, 200)
    retry = scheduler_v1.RetryConfig(
        retry_count=5,
        min_backoff_duration=seconds(0.2),
        max_backoff_duration=seconds(10),
        max_doublings=4,
    )
    created = await scheduler.create_job(
        parent=PARENT, job=target_job("backoff", target.url(), retry_config=retry)
    )
    await scheduler.run_job(name=created.name)

    received = await target.wait_for_async(4)
    done = await job_when(scheduler, created.name, lambda j: j.status.code == 0 and "status" in j)

    assert [r.answered for r in received] == [503, 503, 503, 200]
    history = attempts(emulator, created.name)
    assert [a["retry"] for a in history] == [0, 1, 2, 3]
    assert [a["code_name"] for a in history] == ["UNAVAILABLE"] * 3 + ["OK"]
    times = [datetime.datetime.fromisoformat(a["attempt_time"]) for a in history]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    # backoff doubles: 0.2 s, 0.4 s, 0.8 s; each gap is at least its backoff, and the
    # third gap, whose backoff is 4x the first, is the longest.
    assert gaps[0] >= 0.2
    assert gaps[1] >= 0.4
    assert gaps[2] >= 0.8
    assert gaps[2] > max(gaps[0], gaps[1])
    assert done.last_attempt_time == times[-1]


async def test_retries_stop_after_retry_count(
    scheduler: SchedulerApi, emulator: RunningEmulator, target: TargetServer
) -> None:
    target.default = Reply(status=500)
    retry = scheduler_v1.RetryConfig(
        retry_count=2, min_backoff_duration=seconds(0.05), max_backoff_duration=seconds(0.05)
    )
    created = await scheduler.create_job(
        parent=PARENT, job=target_job("exhausted", target.url(), retry_config=retry)
    )
    status, fired = await emulator.admin_async(
        "POST", "/scheduler/fire", {"job": created.name, "wait": True}
    )

    assert status == 200
    assert [a["retry"] for a in fired["attempts"]] == [0, 1, 2]
    assert len(target.requests) == 3
    done = await scheduler.get_job(name=created.name)
    assert done.status.code == 13  # INTERNAL, from the last attempt's HTTP 500


async def test_no_retry_when_retry_count_is_zero(
    scheduler: SchedulerApi, emulator: RunningEmulator, target: TargetServer
) -> None:
    target.default = Reply(status=500)
    created = await scheduler.create_job(parent=PARENT, job=target_job("once", target.url()))
    status, fired = await emulator.admin_async(
        "POST", "/scheduler/fire", {"job": created.name, "wait": True}
    )
    assert status == 200
    assert len(fired["attempts"]) == 1
    assert len(target.requests) == 1


async def test_attempt_deadline_exceeded(
    scheduler: SchedulerApi, emulator: RunningEmulator, target: TargetServer
) -> None:
    target.reply(Reply(hang=True))
    created = await scheduler.create_job(
        parent=PARENT,
        job=target_job("slow", target.url(), attempt_deadline=seconds(15)),
    )
    await scheduler.run_job(name=created.name)
    await target.wait_for_async(1)

    await emulator.admin_async("POST", "/clock/advance", {"seconds": 16})
    done = await job_when(scheduler, created.name, lambda j: "status" in j)

    assert done.status.code == 4  # DEADLINE_EXCEEDED
    (attempt,) = attempts(emulator, created.name)
    assert attempt["http_status"] is None
    assert attempt["code_name"] == "DEADLINE_EXCEEDED"


async def test_cron_fires_at_schedule_time_in_the_job_time_zone(
    scheduler: SchedulerApi, emulator: RunningEmulator, target: TargetServer
) -> None:
    job = target_job("cron", target.url("/cron"))
    job.schedule = "45 6 * * *"
    job.time_zone = "America/New_York"
    created = await scheduler.create_job(parent=PARENT, job=job)
    due = created.schedule_time
    local = due.astimezone(zoneinfo.ZoneInfo("America/New_York"))
    assert (local.hour, local.minute) == (6, 45)

    await emulator.admin_async("POST", "/clock/advance", {"to": due.isoformat()})
    (request,) = await target.wait_for_async(1)

    sent = datetime.datetime.fromisoformat(request.headers["X-CloudScheduler-ScheduleTime"])
    assert sent == due
    assert sent.utcoffset() == local.utcoffset()  # written in the job's time zone
    after = await job_when(scheduler, created.name, lambda j: "status" in j)
    next_local = after.schedule_time.astimezone(zoneinfo.ZoneInfo("America/New_York"))
    assert (next_local.hour, next_local.minute) == (6, 45)
    assert next_local.date() == local.date() + datetime.timedelta(days=1)
    (attempt,) = attempts(emulator, created.name)
    assert attempt["forced"] is False
    assert datetime.datetime.fromisoformat(attempt["schedule_time"]) == due


async def test_a_clock_jump_over_many_cron_times_runs_once(
    scheduler: SchedulerApi, emulator: RunningEmulator, target: TargetServer
) -> None:
    job = target_job("jump", target.url())
    job.schedule = "*/5 * * * *"
    created = await scheduler.create_job(parent=PARENT, job=job)

    _, clock = await emulator.admin_async("POST", "/clock/advance", {"seconds": 3600})
    await target.wait_for_async(1)
    after = await job_when(scheduler, created.name, lambda j: "status" in j)

    now = datetime.datetime.fromisoformat(clock["now"])
    (attempt,) = attempts(emulator, created.name)
    ran_for = datetime.datetime.fromisoformat(attempt["schedule_time"])
    assert now - datetime.timedelta(minutes=5) < ran_for <= now  # the latest cron time
    assert after.schedule_time > now
    assert len(target.requests) == 1


async def test_fire_route_runs_the_next_scheduled_run_now(
    scheduler: SchedulerApi, emulator: RunningEmulator, target: TargetServer
) -> None:
    created = await scheduler.create_job(parent=PARENT, job=target_job("fire", target.url()))

    status, fired = await emulator.admin_async(
        "POST", "/scheduler/fire", {"job": created.name, "wait": True}
    )
    (request,) = target.requests

    assert status == 200
    assert datetime.datetime.fromisoformat(fired["schedule_time"]) == created.schedule_time
    sent = datetime.datetime.fromisoformat(request.headers["X-CloudScheduler-ScheduleTime"])
    assert sent == created.schedule_time
    after = await scheduler.get_job(name=created.name)
    assert after.schedule_time.year == created.schedule_time.year + 1
    missing = await emulator.admin_async("POST", "/scheduler/fire", {"job": f"{PARENT}/jobs/x"})
    assert missing[0] == 404


async def test_a_paused_job_does_not_fire_but_run_job_still_runs_it(
    scheduler: SchedulerApi, emulator: RunningEmulator, target: TargetServer
) -> None:
    job = target_job("paused", target.url())
    job.schedule = "* * * * *"
    created = await scheduler.create_job(parent=PARENT, job=job)
    await scheduler.pause_job(name=created.name)

    status, _ = await emulator.admin_async("POST", "/scheduler/fire", {"job": created.name})
    assert status == 409
    await emulator.admin_async("POST", "/clock/advance", {"seconds": 600})
    # RunJob is "run now" whatever the state; its request is the first and only one.
    await scheduler.run_job(name=created.name)
    (request,) = await target.wait_for_async(1)
    history = attempts(emulator, created.name)
    assert [a["forced"] for a in history] == [True]
    assert request.headers["X-CloudScheduler-JobName"] == "paused"


async def test_host_map_routes_a_google_host_to_a_local_server(
    scheduler: SchedulerApi, emulator: RunningEmulator, target: TargetServer
) -> None:
    status, hosts = await emulator.admin_async(
        "PUT", "/hostmap", {"host": "compute.googleapis.com", "base_url": target.url()}
    )
    assert status == 200
    # the entry replaces the default route to the emulator's Google APIs simulator
    assert hosts["hosts"]["compute.googleapis.com"] == target.url().rstrip("/")
    uri = "https://compute.googleapis.com/compute/v1/projects/p/zones/z/instanceGroupManagers/m/resize?size=3"
    token = scheduler_v1.OAuthToken(service_account_email=SERVICE_ACCOUNT)
    created = await scheduler.create_job(
        parent=PARENT, job=target_job("mapped", uri, oauth_token=token)
    )
    await scheduler.run_job(name=created.name)
    (request,) = await target.wait_for_async(1)

    assert request.path == "/compute/v1/projects/p/zones/z/instanceGroupManagers/m/resize"
    assert request.query == {"size": "3"}
    assert request.headers["Host"] == "compute.googleapis.com"
    assert request.bearer_token is not None


async def test_deleting_a_job_stops_its_running_execution(
    scheduler: SchedulerApi, emulator: RunningEmulator, target: TargetServer
) -> None:
    target.reply(Reply(hang=True))
    created = await scheduler.create_job(
        parent=PARENT,
        job=target_job(
            "doomed",
            target.url(),
            retry_config=scheduler_v1.RetryConfig(retry_count=5, min_backoff_duration=seconds(0)),
        ),
    )
    await scheduler.run_job(name=created.name)
    await target.wait_for_async(1)
    await scheduler.delete_job(name=created.name)

    await emulator.admin_async("POST", "/clock/advance", {"seconds": 3600})
    await scheduler.create_job(parent=PARENT, job=target_job("after", target.url()))
    status, _ = await emulator.admin_async(
        "POST", "/scheduler/fire", {"job": f"{PARENT}/jobs/after", "wait": True}
    )

    assert status == 200
    # the deleted job's cancelled attempt recorded nothing and was not retried
    assert attempts(emulator, created.name) == []
    assert len(target.requests) == 2
