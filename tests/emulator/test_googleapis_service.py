"""The Google APIs simulator as a whole: routing, authentication, the request log, declarations.

Why: the simulated APIs are only useful if what the operator really sends reaches them -
Cloud Scheduler jobs and Cloud Tasks tasks aimed at `https://*.googleapis.com`, routed by
the emulator's default host map, carrying tokens the emulator minted - and if tests can
see afterwards who called what how often. With authentication required, the simulator
must refuse what Google refuses, in Google's words.
"""

from __future__ import annotations

import asyncio
import json
import select
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import google.auth.transport.requests
import google.oauth2.credentials
import pytest
from google.cloud import scheduler_v1, tasks_v2

from gcpcall.emulator.core import TokenIssuer
from gcpcall.emulator.server import Emulator, parse_args
from tests.emulator.conftest import PARENT, BackgroundLoop, RunningEmulator
from tests.emulator.googleapis_client import GoogleClient
from tests.emulator.tasks_conftest import new_queue_id, queue_name, wait_outcome_async

COMPUTE = "https://compute.googleapis.com/compute/v1"
MIG = {"project": "demo-project", "zone": "europe-west3-a", "name": "web"}
RESIZE = f"{COMPUTE}/projects/demo-project/zones/europe-west3-a/instanceGroupManagers/web/resize"
SCALER = "mig-scaler@demo-project.iam.gserviceaccount.com"
LAUNCHER = "dataflow-launcher@demo-project.iam.gserviceaccount.com"
WORD_COUNT = "gs://dataflow-templates/latest/Word_Count"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
AUTH_HINT = (
    "Expected OAuth 2 access token, login cookie or other valid authentication credential. "
    "See https://developers.google.com/identity/sign-in/web/devconsole-project."
)
LAUNCH = "import sys; from gcpcall.emulator.server import main; sys.exit(main(sys.argv[1:]))"

# google-auth has no type hints: its entry points are used through Any
_Credentials: Any = google.oauth2.credentials.Credentials
_AuthorizedSession: Any = google.auth.transport.requests.AuthorizedSession


async def token_for(google: GoogleClient, email: str, scopes: str = CLOUD_PLATFORM) -> str:
    """An access token for `email` from the emulator's metadata server, over HTTP."""
    emulator = google.emulator
    assert isinstance(emulator, RunningEmulator)
    assert (await emulator.admin_async("PUT", "/metadata", {"email": email}))[0] == 200
    url = (
        f"{emulator.http_url}/computeMetadata/v1/instance/service-accounts/default/token"
        f"?scopes={scopes}"
    )
    async with google.session.get(url, headers={"Metadata-Flavor": "Google"}) as response:
        assert response.status == 200
        return str((await response.json())["access_token"])


async def require_auth(google: GoogleClient, required: bool = True) -> None:
    status, _ = await google.emulator.admin_async("PUT", "/auth", {"required": required})
    assert status == 200


async def test_the_default_host_map_routes_the_simulated_hosts(
    google: GoogleClient, emulator: RunningEmulator
) -> None:
    hosts = await google.host_map()

    for host in ("compute.googleapis.com", "cloudbuild.googleapis.com", "dataflow.googleapis.com"):
        assert hosts[host] == f"{emulator.http_url}/googleapis/{host}"
    async with google.session.get(f"{emulator.http_url}/googleapis/storage.googleapis.com/x") as r:
        assert r.status == 404
        assert (await r.json())["error"]["status"] == "NOT_FOUND"


def test_an_explicit_route_wins_and_the_defaults_can_be_turned_off(
    background_loop: BackgroundLoop, token_issuer: TokenIssuer
) -> None:
    async def host_maps() -> list[dict[str, str]]:
        maps = []
        for routes in (True, False):
            instance = Emulator(
                tokens=token_issuer,
                host_map={"compute.googleapis.com": "http://127.0.0.1:9/compute"},
                googleapis_routes=routes,
            )
            await instance.start()
            maps.append(instance.dispatcher.host_map())
            await instance.stop()
        return maps

    with_defaults, without = background_loop.call(host_maps())

    assert with_defaults["compute.googleapis.com"] == "http://127.0.0.1:9/compute"
    assert with_defaults["dataflow.googleapis.com"].endswith("/googleapis/dataflow.googleapis.com")
    assert without == {"compute.googleapis.com": "http://127.0.0.1:9/compute"}
    assert parse_args([]).googleapis_routes is True
    assert parse_args(["--no-googleapis-routes"]).googleapis_routes is False


async def test_with_auth_required_every_request_needs_an_emulator_token(
    google: GoogleClient, emulator: RunningEmulator
) -> None:
    await google.declare("compute/instance-group-managers", MIG)
    good = await token_for(google, SCALER)
    narrow = await token_for(google, SCALER, "https://www.googleapis.com/auth/devstorage.read_only")
    id_token = emulator.emulator.tokens.id_token(SCALER, RESIZE)
    await require_auth(google)

    missing = await google.call("POST", f"{RESIZE}?size=1")
    invalid = await google.call("POST", f"{RESIZE}?size=1", token="ya29.not-from-here")
    not_access = await google.call("POST", f"{RESIZE}?size=1", token=id_token)
    scopes = await google.call("POST", f"{RESIZE}?size=1", token=narrow)
    allowed = await google.call("POST", f"{RESIZE}?size=1", token=good)

    assert missing.status == 401
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="https://accounts.google.com/"'
    assert missing.json == {
        "error": {
            "code": 401,
            "message": f"Request is missing required authentication credential. {AUTH_HINT}",
            "errors": [
                {
                    "message": "Login Required.",
                    "domain": "global",
                    "reason": "required",
                    "location": "Authorization",
                    "locationType": "header",
                }
            ],
            "status": "UNAUTHENTICATED",
        }
    }
    for reply in (invalid, not_access):
        assert reply.status == 401
        assert reply.json["error"]["message"] == (
            f"Request had invalid authentication credentials. {AUTH_HINT}"
        )
        assert reply.json["error"]["errors"][0]["reason"] == "authError"
    assert scopes.status == 403
    assert scopes.json["error"]["message"] == "Request had insufficient authentication scopes."
    assert scopes.json["error"]["status"] == "PERMISSION_DENIED"
    assert allowed.status == 200
    assert allowed.json["user"] == SCALER
    log = await google.requests(host="compute.googleapis.com")
    assert [(e["status"], e["email"]) for e in log] == [
        (401, None),
        (401, None),
        (401, None),
        (403, SCALER),
        (200, SCALER),
    ]


async def test_the_official_google_auth_session_is_accepted(google: GoogleClient) -> None:
    await google.declare("compute/instance-group-managers", MIG)
    token = await token_for(google, SCALER)
    await require_auth(google)
    url = await google.resolve(RESIZE.removesuffix("/resize"))

    def get() -> Any:
        session = _AuthorizedSession(_Credentials(token))
        return session.get(url, timeout=30)

    response = await asyncio.to_thread(get)

    assert response.status_code == 200
    assert response.json()["name"] == "web"
    [entry] = await google.requests(rpc="compute.instanceGroupManagers.get")
    assert entry["email"] == SCALER


async def test_the_request_log_records_filters_and_clears(google: GoogleClient) -> None:
    await google.declare("compute/instance-group-managers", MIG)
    token = await token_for(google, SCALER)  # auth is off: a token is recorded, none needed

    op = (await google.call("POST", f"{RESIZE}?size=2", token=token)).json
    await google.call("GET", op["selfLink"])
    await google.call("POST", f"{RESIZE.replace('/web/', '/nope/')}?size=2")

    every = await google.requests()
    assert [(e["method"], e["rpc"], e["status"]) for e in every] == [
        ("POST", "compute.instanceGroupManagers.resize", 200),
        ("GET", "compute.zoneOperations.get", 200),
        ("POST", "compute.instanceGroupManagers.resize", 404),
    ]
    first = every[0]
    assert first["host"] == "compute.googleapis.com"
    assert first["path"] == RESIZE.removeprefix("https://compute.googleapis.com")
    assert first["query"] == {"size": "2"}
    assert first["email"] == SCALER
    assert every[2]["email"] is None
    assert [e["id"] for e in every] == sorted(e["id"] for e in every)
    assert len(await google.requests(method="GET")) == 1
    assert len(await google.requests(path_prefix="/compute/v1/projects/demo-project/zones/")) == 3
    assert await google.requests(host="dataflow.googleapis.com") == []
    assert (await google.emulator.admin_async("DELETE", "/googleapis/requests")) == (200, {})
    assert await google.requests() == []


async def test_a_cloud_scheduler_job_reaches_the_simulated_compute_api(
    google: GoogleClient, scheduler_async_client: scheduler_v1.CloudSchedulerAsyncClient
) -> None:
    await google.declare("compute/instance-group-managers", {**MIG, "target_size": 1})
    job = await scheduler_async_client.create_job(
        parent=PARENT,
        job=scheduler_v1.Job(
            name=f"{PARENT}/jobs/scale-up-mig",
            schedule="0 6 * * *",
            time_zone="Europe/Berlin",
            http_target=scheduler_v1.HttpTarget(
                uri=f"{RESIZE}?size=4",
                http_method=scheduler_v1.HttpMethod.POST,
                oauth_token=scheduler_v1.OAuthToken(service_account_email=SCALER),
            ),
        ),
    )
    await require_auth(google)  # the job's token is one the emulator minted: accepted

    status, fired = await google.emulator.admin_async(
        "POST", "/scheduler/fire", {"job": job.name, "wait": True}
    )

    assert status == 200
    assert [a["http_status"] for a in fired["attempts"]] == [200]
    [entry] = await google.requests(rpc="compute.instanceGroupManagers.resize")
    assert (entry["email"], entry["status"], entry["query"]) == (SCALER, 200, {"size": "4"})
    mig = (
        await google.call(
            "GET", RESIZE.removesuffix("/resize"), token=await token_for(google, SCALER)
        )
    ).json
    assert mig["targetSize"] == 4


async def test_cloud_tasks_launches_reach_dataflow_and_a_reused_name_gets_409(
    google: GoogleClient,
    emulator: RunningEmulator,
    tasks_async_client: tasks_v2.CloudTasksAsyncClient,
) -> None:
    await google.declare("dataflow/templates", {"gcs_path": WORD_COUNT})
    queue = queue_name(new_queue_id("etl"))
    await tasks_async_client.create_queue(
        parent=PARENT,
        queue=tasks_v2.Queue(name=queue, retry_config=tasks_v2.RetryConfig(max_attempts=1)),
    )
    url = (
        "https://dataflow.googleapis.com/v1b3/projects/demo-project/locations/europe-west3/"
        f"templates:launch?gcsPath={WORD_COUNT}"
    )
    body = json.dumps({"jobName": "wordcount-2026-11-22", "parameters": {}}).encode()
    names = []
    for task_id in ("first", "second"):
        task = tasks_v2.Task(
            name=f"{queue}/tasks/{task_id}",
            http_request=tasks_v2.HttpRequest(
                url=url,
                body=body,
                headers={"Content-Type": "application/json"},
                oauth_token=tasks_v2.OAuthToken(service_account_email=LAUNCHER),
            ),
        )
        names.append((await tasks_async_client.create_task(parent=queue, task=task)).name)
        await wait_outcome_async(emulator, names[-1])

    first, second = [await wait_outcome_async(emulator, name) for name in names]

    assert first["outcome"] == "succeeded"
    assert second["outcome"] == "failed"
    assert second["attempts"][0]["http_status"] == 409
    log = await google.requests(rpc="dataflow.projects.locations.templates.launch")
    assert [(e["status"], e["email"]) for e in log] == [(200, LAUNCHER), (409, LAUNCHER)]


async def test_bulk_declarations_are_all_or_nothing(google: GoogleClient) -> None:
    admin = google.emulator.admin_async
    doc = {
        "compute": {
            "instance_group_managers": [MIG, {**MIG, "zone": None, "region": "europe-west3"}],
            "security_policies": [
                {"project": "demo-project", "name": "edge", "rules": [{"priority": 1000}]}
            ],
        },
        "cloudbuild": {"triggers": [{"project": "demo-project", "trigger": "nightly"}]},
        "dataflow": {"templates": [{"gcs_path": WORD_COUNT}]},
    }

    status, declared = await admin("POST", "/googleapis/declarations", doc)
    assert (status, declared) == (
        200,
        {
            "declared": {
                "compute.instance_group_managers": 2,
                "compute.security_policies": 1,
                "cloudbuild.triggers": 1,
                "dataflow.templates": 1,
            }
        },
    )
    _, listed = await admin("GET", "/googleapis/declarations")
    assert len(listed["compute"]["instance_group_managers"]) == 2
    assert [r["priority"] for r in listed["compute"]["security_policies"][0]["rules"]] == [
        1000,
        2147483647,
    ]
    assert (await admin("DELETE", "/googleapis/declarations")) == (200, {})
    bad = {"dataflow": {"templates": [{"gcs_path": "gs://ok/a"}, {"gcs_path": "not-gcs"}]}}
    assert (await admin("POST", "/googleapis/declarations", bad))[0] == 400
    assert (await admin("POST", "/googleapis/declarations", {"storage": {}}))[0] == 400
    _, listed = await admin("GET", "/googleapis/declarations")
    assert listed == {
        "compute": {"instance_group_managers": [], "security_policies": []},
        "cloudbuild": {"triggers": []},
        "dataflow": {"templates": []},
    }


def test_the_declare_flag_takes_json_or_a_file(tmp_path: Path) -> None:
    doc = {"dataflow": {"templates": [{"gcs_path": WORD_COUNT}]}}
    file = tmp_path / "declarations.json"
    file.write_text(json.dumps(doc))

    args = parse_args(["--googleapis-declare", json.dumps(doc), f"--googleapis-declare=@{file}"])

    assert args.declarations == [doc, doc]
    for bad in ("--googleapis-declare={", "--googleapis-declare=[]", "--googleapis-declare=@/x/y"):
        with pytest.raises(SystemExit) as stopped:
            parse_args([bad])
        assert stopped.value.code == 2


@pytest.fixture
def standalone() -> Iterator[dict[str, int]]:
    declarations = {"compute": {"instance_group_managers": [MIG]}}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            LAUNCH,
            "--grpc-port=0",
            "--http-port=0",
            f"--googleapis-declare={json.dumps(declarations)}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    readable, _, _ = select.select([proc.stdout], [], [], 60)
    assert readable, "the emulator printed no ready line"
    try:
        yield json.loads(proc.stdout.readline())
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()


def test_the_standalone_emulator_declares_from_its_flags(standalone: dict[str, int]) -> None:
    base = f"http://127.0.0.1:{standalone['http_port']}"
    path = RESIZE.removeprefix("https://")
    request = urllib.request.Request(f"{base}/googleapis/{path}?size=2", method="POST")

    with urllib.request.urlopen(request, timeout=30) as response:
        op = json.loads(response.read())
    with urllib.request.urlopen(f"{base}/emulator/v1/hostmap", timeout=30) as response:
        hosts = json.loads(response.read())["hosts"]

    assert op["kind"] == "compute#operation"
    assert hosts["compute.googleapis.com"] == f"{base}/googleapis/compute.googleapis.com"
