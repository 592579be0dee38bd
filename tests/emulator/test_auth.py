"""The Cloud Scheduler and Cloud Tasks emulators with authentication on (`--require-auth`).

Each RPC needs a bearer token the emulator's identity services minted: the official
clients send it as metadata, or through google-auth credentials on the channel as in
production. The caller lands in the call log, and attaching a token service account to a
job, task or queue needs `iam.serviceAccounts.actAs` on it under the emulator's IAM policy.
Tokens come from the emulator's metadata server over HTTP (as the operator's ADC does);
only the Workload Identity principal's token is minted in-process (the STS path is covered
by tests/emulator/test_identity_emulator.py).
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import google.auth.transport.grpc
import google.auth.transport.requests
import google.oauth2.credentials
import grpc
import pytest
from google.api_core import exceptions as gexc
from google.cloud import scheduler_v1, tasks_v2
from google.cloud.scheduler_v1.services.cloud_scheduler.transports import (
    CloudSchedulerGrpcAsyncIOTransport,
    CloudSchedulerGrpcTransport,
)
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport

from gcpcall.emulator.core import TokenIssuer
from gcpcall.emulator.iam import UNAUTHENTICATED_MESSAGE, act_as_denied_message
from gcpcall.emulator.rpcauth import INSUFFICIENT_SCOPES_MESSAGE
from gcpcall.emulator.server import Emulator, parse_args
from tests.emulator.conftest import PARENT, BackgroundLoop, RunningEmulator

CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
A = "team-a@test-project.iam.gserviceaccount.com"
B = "team-b@test-project.iam.gserviceaccount.com"
POOL = "test-project.svc.id.goog"
KSA_PRINCIPAL = (
    "principal://iam.googleapis.com/projects/123456789012/locations/global/"
    f"workloadIdentityPools/{POOL}/subject/ns/team-a/sa/runner"
)
SCHEDULER = "google.cloud.scheduler.v1.CloudScheduler"
TASKS = "google.cloud.tasks.v2.CloudTasks"

# google-auth has no type hints: its entry points are used through Any
_UserCredentials: Any = google.oauth2.credentials.Credentials
_Request: Any = google.auth.transport.requests.Request
_secure_authorized_channel: Any = google.auth.transport.grpc.secure_authorized_channel


@pytest.fixture
def secured(
    background_loop: BackgroundLoop, token_issuer: TokenIssuer
) -> Iterator[RunningEmulator]:
    """An emulator started with require_auth=True (the `--require-auth` flag)."""

    async def build() -> Emulator:
        instance = Emulator(seed=0, tokens=token_issuer, require_auth=True)
        await instance.start(grpc_port=0, http_port=0)
        return instance

    instance = background_loop.call(build())
    yield RunningEmulator(instance, background_loop)
    background_loop.call(instance.stop())


def token_for(emulator: RunningEmulator, email: str, scopes: str = CLOUD_PLATFORM) -> str:
    """An access token for `email` from the emulator's metadata server, over HTTP."""
    status, _ = emulator.admin("PUT", "/metadata", {"email": email})
    assert status == 200
    request = urllib.request.Request(
        f"{emulator.http_url}/computeMetadata/v1/instance/service-accounts/default/token"
        f"?scopes={scopes}",
        headers={"Metadata-Flavor": "Google"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(json.loads(response.read())["access_token"])


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


@pytest.fixture
def scheduler(secured: RunningEmulator) -> Iterator[scheduler_v1.CloudSchedulerClient]:
    channel = grpc.insecure_channel(secured.grpc_target)
    yield scheduler_v1.CloudSchedulerClient(transport=CloudSchedulerGrpcTransport(channel=channel))
    channel.close()


@pytest.fixture
def tasks(secured: RunningEmulator) -> Iterator[tasks_v2.CloudTasksClient]:
    channel = grpc.insecure_channel(secured.grpc_target)
    yield tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=channel))
    channel.close()


def job(name: str, *, oauth: str | None = None, oidc: str | None = None) -> scheduler_v1.Job:
    target = scheduler_v1.HttpTarget(uri="https://compute.googleapis.com/compute/v1/x")
    if oauth:
        target.oauth_token = scheduler_v1.OAuthToken(service_account_email=oauth)
    if oidc:
        target.oidc_token = scheduler_v1.OidcToken(service_account_email=oidc)
    return scheduler_v1.Job(
        name=f"{PARENT}/jobs/{name}", schedule="5 * * * *", time_zone="UTC", http_target=target
    )


def calls(emulator: RunningEmulator, method: str) -> list[dict[str, Any]]:
    status, doc = emulator.admin("GET", f"/calls?method={method}")
    assert status == 200
    return list(doc["calls"])


def grant(emulator: RunningEmulator, member: str, service_account: str) -> None:
    status, _ = emulator.admin(
        "POST", "/iam/policy:grant", {"member": member, "serviceAccount": service_account}
    )
    assert status == 200


# -- the switch ---------------------------------------------------------------------------


def test_the_flag_and_the_constructor_switch_it_on_and_default_is_off() -> None:
    assert parse_args([]).require_auth is False
    assert parse_args(["--require-auth"]).require_auth is True
    assert Emulator(tokens=TokenIssuer(key_size=1024)).auth.required is False
    assert Emulator(tokens=TokenIssuer(key_size=1024), require_auth=True).auth.required is True


def test_admin_route_reads_and_switches_it(secured: RunningEmulator) -> None:
    assert secured.admin("GET", "/auth") == (200, {"required": True})
    assert secured.admin("PUT", "/auth", {"required": False}) == (200, {"required": False})
    assert secured.emulator.auth.required is False
    assert secured.admin("PUT", "/auth", {"required": "yes"})[0] == 400


# -- authentication -----------------------------------------------------------------------


def test_anonymous_calls_are_unauthenticated_on_both_services(
    secured: RunningEmulator,
    scheduler: scheduler_v1.CloudSchedulerClient,
    tasks: tasks_v2.CloudTasksClient,
) -> None:
    with pytest.raises(gexc.Unauthenticated) as on_scheduler:
        scheduler.list_jobs(parent=PARENT)
    assert UNAUTHENTICATED_MESSAGE in str(on_scheduler.value)
    with pytest.raises(gexc.Unauthenticated):
        tasks.list_queues(parent=PARENT)
    refused = calls(secured, "ListJobs") + calls(secured, "ListQueues")
    assert [(c["code"], c["principal"]) for c in refused] == [("UNAUTHENTICATED", None)] * 2


def test_unknown_and_revoked_tokens_are_unauthenticated(
    secured: RunningEmulator, scheduler: scheduler_v1.CloudSchedulerClient
) -> None:
    with pytest.raises(gexc.Unauthenticated):
        scheduler.list_jobs(parent=PARENT, metadata=bearer("ya29.not-one-of-ours"))
    token = token_for(secured, A)
    list(scheduler.list_jobs(parent=PARENT, metadata=bearer(token)))
    assert secured.admin("POST", "/iam/tokens:revoke", {"principal": A}) == (200, {"revoked": 1})
    with pytest.raises(gexc.Unauthenticated):
        scheduler.list_jobs(parent=PARENT, metadata=bearer(token))
    assert [c["code"] for c in calls(secured, "ListJobs")] == [
        "UNAUTHENTICATED", "OK", "UNAUTHENTICATED"]


def test_a_token_without_a_cloud_scope_is_refused(
    secured: RunningEmulator,
    scheduler: scheduler_v1.CloudSchedulerClient,
    tasks: tasks_v2.CloudTasksClient,
) -> None:
    token = token_for(secured, A, scopes="https://www.googleapis.com/auth/userinfo.email")
    with pytest.raises(gexc.PermissionDenied) as denied:
        scheduler.list_jobs(parent=PARENT, metadata=bearer(token))
    assert INSUFFICIENT_SCOPES_MESSAGE in str(denied.value)
    # Cloud Tasks also accepts its own scope
    tasks_token = token_for(secured, A, scopes="https://www.googleapis.com/auth/cloud-tasks")
    assert list(tasks.list_queues(parent=PARENT, metadata=bearer(tasks_token))) == []


def test_google_auth_credentials_on_the_channel_authenticate_the_caller(
    secured: RunningEmulator,
) -> None:
    """Production's path: google-auth credentials as call credentials of the channel."""
    credentials = _UserCredentials(token_for(secured, A))
    channel = _secure_authorized_channel(
        credentials, _Request(), secured.grpc_target,
        ssl_credentials=grpc.local_channel_credentials(),
    )
    try:
        client = scheduler_v1.CloudSchedulerClient(
            transport=CloudSchedulerGrpcTransport(channel=channel)
        )
        created = client.create_job(parent=PARENT, job=job("own", oauth=A))
    finally:
        channel.close()
    assert created.http_target.oauth_token.service_account_email == A
    [call] = calls(secured, "CreateJob")
    assert (call["code"], call["principal"]) == ("OK", A)


async def test_the_async_client_with_a_token_is_recorded_as_its_principal(
    secured: RunningEmulator,
) -> None:
    token = await asyncio.to_thread(token_for, secured, B)
    channel = grpc.aio.insecure_channel(secured.grpc_target)
    client = scheduler_v1.CloudSchedulerAsyncClient(
        transport=CloudSchedulerGrpcAsyncIOTransport(channel=channel)
    )
    try:
        await client.create_job(parent=PARENT, job=job("async-b", oidc=B), metadata=bearer(token))
        with pytest.raises(gexc.NotFound):
            await client.get_job(name=f"{PARENT}/jobs/missing", metadata=bearer(token))
    finally:
        await channel.close()
    assert [(c["code"], c["principal"]) for c in calls(secured, "CreateJob")] == [("OK", B)]
    assert [(c["code"], c["principal"]) for c in calls(secured, "GetJob")] == [("NOT_FOUND", B)]


# -- actAs on the token service account ---------------------------------------------------


def test_create_job_needs_act_as_on_its_token_service_account(
    secured: RunningEmulator, scheduler: scheduler_v1.CloudSchedulerClient
) -> None:
    token = token_for(secured, A)
    for name, kind in (("as-b-oauth", "oauth"), ("as-b-oidc", "oidc")):
        with pytest.raises(gexc.PermissionDenied) as denied:
            scheduler.create_job(parent=PARENT, job=job(name, **{kind: B}), metadata=bearer(token))
        assert act_as_denied_message(B) in str(denied.value)
    assert list(scheduler.list_jobs(parent=PARENT, metadata=bearer(token))) == []

    # a service account may attach itself; a job without a token needs no actAs
    scheduler.create_job(parent=PARENT, job=job("as-a", oauth=A), metadata=bearer(token))
    scheduler.create_job(parent=PARENT, job=job("no-token"), metadata=bearer(token))
    # once the policy lets A act as B, it may attach B
    grant(secured, f"serviceAccount:{A}", B)
    created = scheduler.create_job(
        parent=PARENT, job=job("as-b-oidc", oidc=B), metadata=bearer(token)
    )
    assert created.http_target.oidc_token.service_account_email == B
    log = [(c["code"], c["principal"]) for c in calls(secured, "CreateJob")]
    assert log == [("PERMISSION_DENIED", A)] * 2 + [("OK", A)] * 3


def test_update_job_needs_act_as_only_when_it_writes_the_target(
    secured: RunningEmulator, scheduler: scheduler_v1.CloudSchedulerClient
) -> None:
    owner = token_for(secured, B)
    created = scheduler.create_job(
        parent=PARENT, job=job("shared", oauth=B), metadata=bearer(owner)
    )
    token = token_for(secured, A)  # A may not act as B

    created.schedule = "15 3 * * *"
    updated = scheduler.update_job(
        job=created, update_mask={"paths": ["schedule"]}, metadata=bearer(token)
    )
    assert updated.schedule == "15 3 * * *"
    with pytest.raises(gexc.PermissionDenied) as denied:
        scheduler.update_job(
            job=created, update_mask={"paths": ["http_target"]}, metadata=bearer(token)
        )
    assert act_as_denied_message(B) in str(denied.value)
    # switching the job to A's own token is allowed (A acts as itself)
    mine = job("shared", oauth=A)
    switched = scheduler.update_job(
        job=mine, update_mask={"paths": ["http_target.oauth_token"]}, metadata=bearer(token)
    )
    assert switched.http_target.oauth_token.service_account_email == A
    # B, the job's first owner, may not attach A's token (an empty mask writes the target)
    with pytest.raises(gexc.PermissionDenied):
        scheduler.update_job(job=job("shared", oidc=A), metadata=bearer(owner))
    assert [c["code"] for c in calls(secured, "UpdateJob")] == [
        "OK", "PERMISSION_DENIED", "OK", "PERMISSION_DENIED"]


def test_a_workload_identity_principal_acts_as_the_gsa_it_was_granted(
    secured: RunningEmulator, scheduler: scheduler_v1.CloudSchedulerClient
) -> None:
    token = secured.emulator.tokens.access_token(KSA_PRINCIPAL, [CLOUD_PLATFORM])
    with pytest.raises(gexc.PermissionDenied):
        scheduler.create_job(parent=PARENT, job=job("wi", oauth=A), metadata=bearer(token))
    grant(secured, f"serviceAccount:{POOL}[team-a/runner]", A)
    scheduler.create_job(parent=PARENT, job=job("wi", oauth=A), metadata=bearer(token))
    assert [(c["code"], c["principal"]) for c in calls(secured, "CreateJob")] == [
        ("PERMISSION_DENIED", KSA_PRINCIPAL), ("OK", KSA_PRINCIPAL)]


def test_create_task_needs_act_as_on_its_token_service_account(
    secured: RunningEmulator, tasks: tasks_v2.CloudTasksClient
) -> None:
    token = token_for(secured, A)
    queue = tasks.create_queue(
        parent=PARENT, queue=tasks_v2.Queue(name=f"{PARENT}/queues/q"), metadata=bearer(token)
    )
    for auth in (
        {"oauth_token": tasks_v2.OAuthToken(service_account_email=B)},
        {"oidc_token": tasks_v2.OidcToken(service_account_email=B)},
    ):
        task = tasks_v2.Task(
            http_request=tasks_v2.HttpRequest(url="https://compute.googleapis.com/x", **auth)
        )
        with pytest.raises(gexc.PermissionDenied) as denied:
            tasks.create_task(parent=queue.name, task=task, metadata=bearer(token))
        assert act_as_denied_message(B) in str(denied.value)
    own = tasks_v2.Task(
        http_request=tasks_v2.HttpRequest(
            url="https://compute.googleapis.com/x",
            oidc_token=tasks_v2.OidcToken(service_account_email=A),
        ),
        schedule_time={"seconds": int(time.time()) + 86400},  # stays queued: no dispatch
    )
    created = tasks.create_task(parent=queue.name, task=own, metadata=bearer(token))
    assert created.http_request.oidc_token.service_account_email == A
    log = [(c["code"], c["principal"]) for c in calls(secured, "CreateTask")]
    assert log == [("PERMISSION_DENIED", A), ("PERMISSION_DENIED", A), ("OK", A)]


def test_a_queue_level_token_override_needs_act_as(
    secured: RunningEmulator, tasks: tasks_v2.CloudTasksClient
) -> None:
    token = token_for(secured, A)
    override = tasks_v2.HttpTarget(oauth_token=tasks_v2.OAuthToken(service_account_email=B))
    queue = tasks_v2.Queue(name=f"{PARENT}/queues/overridden", http_target=override)
    with pytest.raises(gexc.PermissionDenied):
        tasks.create_queue(parent=PARENT, queue=queue, metadata=bearer(token))
    with pytest.raises(gexc.PermissionDenied):
        tasks.update_queue(queue=queue, metadata=bearer(token))
    grant(secured, A, B)
    assert tasks.update_queue(queue=queue, metadata=bearer(token)).http_target == override
    assert [c["code"] for c in calls(secured, "CreateQueue") + calls(secured, "UpdateQueue")] == [
        "PERMISSION_DENIED", "PERMISSION_DENIED", "OK"]


def test_faults_are_recorded_with_the_caller(
    secured: RunningEmulator, scheduler: scheduler_v1.CloudSchedulerClient
) -> None:
    secured.emulator.faults.set("ListJobs", grpc.StatusCode.UNAVAILABLE, 1.0)
    with pytest.raises(gexc.ServiceUnavailable):
        scheduler.list_jobs(parent=PARENT, metadata=bearer(token_for(secured, A)), retry=None)
    assert [(c["code"], c["principal"]) for c in calls(secured, "ListJobs")] == [
        ("UNAVAILABLE", A)]


# -- off (the default) --------------------------------------------------------------------


def test_without_the_flag_anonymous_calls_pass_and_act_as_is_not_enforced(
    emulator: RunningEmulator,
    scheduler_client: scheduler_v1.CloudSchedulerClient,
    tasks_client: tasks_v2.CloudTasksClient,
) -> None:
    scheduler_client.create_job(parent=PARENT, job=job("anon", oauth=B))
    token = token_for(emulator, A)
    scheduler_client.create_job(parent=PARENT, job=job("a-as-b", oauth=B), metadata=bearer(token))
    assert list(tasks_client.list_queues(parent=PARENT)) == []
    # a valid token still names its caller in the call log
    assert [(c["code"], c["principal"]) for c in calls(emulator, "CreateJob")] == [
        ("OK", None), ("OK", A)]
    assert [c["service"] for c in calls(emulator, "ListQueues")] == [TASKS]
    assert {c["service"] for c in calls(emulator, "CreateJob")} == {SCHEDULER}
