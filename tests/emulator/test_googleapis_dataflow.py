"""The simulated Dataflow API: template launches, the job they start, the 409 on a reused name.

Why: launching a template twice with the same job name while the first job runs is what
the operator must never cause by itself (a retried launch) and must report when a user's
payload causes it. The 409 body is Dataflow's as captured in apache/beam#29441; the other
shapes follow the v1b3 reference (see `gcpcall.emulator.googleapis_dataflow`).
"""

from __future__ import annotations

import datetime
import re
import zoneinfo

import pytest

from tests.emulator.googleapis_client import GoogleClient

DATAFLOW = "https://dataflow.googleapis.com/v1b3/projects/demo-project/locations/europe-west3"
WORD_COUNT = "gs://dataflow-templates/latest/Word_Count"
FLEX = "gs://demo-bucket/templates/etl.json"
LAUNCH = f"{DATAFLOW}/templates:launch?gcsPath={WORD_COUNT}"


def launch_body(name: str) -> dict[str, object]:
    return {
        "jobName": name,
        "parameters": {"inputFile": "gs://dataflow-samples/shakespeare/kinglear.txt"},
        "environment": {"tempLocation": "gs://demo-bucket/tmp"},
    }


async def test_a_classic_launch_answers_the_job_as_dataflow_does(google: GoogleClient) -> None:
    await google.declare("dataflow/templates", {"gcs_path": WORD_COUNT, "done_after_seconds": 60})

    reply = await google.call("POST", LAUNCH, json=launch_body("wordcount-2026-11-22"))

    assert reply.status == 200
    job = reply.json["job"]
    assert set(job) == {
        "id",
        "projectId",
        "name",
        "type",
        "currentStateTime",
        "createTime",
        "location",
        "startTime",
    }
    assert (job["projectId"], job["name"], job["location"]) == (
        "demo-project",
        "wordcount-2026-11-22",
        "europe-west3",
    )
    assert job["type"] == "JOB_TYPE_BATCH"
    assert job["currentStateTime"] == "1970-01-01T00:00:00Z"  # JOB_STATE_UNKNOWN, left out
    created = datetime.datetime.fromisoformat(job["createTime"])
    match = re.fullmatch(r"(\d{4}-\d\d-\d\d_\d\d_\d\d_\d\d)-(\d{19})", job["id"])
    assert match is not None
    pacific = created.astimezone(zoneinfo.ZoneInfo("America/Los_Angeles"))
    assert match[1] == pacific.strftime("%Y-%m-%d_%H_%M_%S")

    got = (await google.call("GET", f"{DATAFLOW}/jobs/{job['id']}")).json
    assert got["currentState"] == "JOB_STATE_RUNNING"
    await google.advance(60)
    got = (await google.call("GET", f"{DATAFLOW}/jobs/{job['id']}")).json
    assert got["currentState"] == "JOB_STATE_DONE"
    changed = datetime.datetime.fromisoformat(got["currentStateTime"])
    assert changed - created == datetime.timedelta(seconds=60)
    _, jobs = await google.emulator.admin_async("GET", "/googleapis/dataflow/jobs")
    assert jobs["jobs"][0]["parameters"] == launch_body("x")["parameters"]


async def test_a_name_in_use_by_an_active_job_is_refused_until_it_ends(
    google: GoogleClient,
) -> None:
    await google.declare("dataflow/templates", {"gcs_path": WORD_COUNT, "done_after_seconds": 60})
    first = await google.call("POST", LAUNCH, json=launch_body("nightly"))
    assert first.status == 200

    again = await google.call("POST", LAUNCH, json=launch_body("nightly"))

    assert again.status == 409
    error = again.json["error"]
    message = error["message"]
    assert re.fullmatch(
        r"\([0-9a-f]{16}\): There is already an active job named nightly\. If you want to  "
        r"submit a second job, try again by setting a different name\.",
        message,
    )
    assert error == {
        "code": 409,
        "message": message,
        "errors": [{"message": message, "domain": "global", "reason": "alreadyExists"}],
        "status": "ALREADY_EXISTS",
    }
    other_region = LAUNCH.replace("europe-west3", "us-central1")
    assert (await google.call("POST", other_region, json=launch_body("nightly"))).status == 200

    await google.advance(60)  # the first job is done: its name is free again
    third = await google.call("POST", LAUNCH, json=launch_body("nightly"))
    assert third.status == 200
    assert third.json["job"]["id"] != first.json["job"]["id"]


async def test_a_flex_launch_and_a_failing_job(google: GoogleClient) -> None:
    await google.declare(
        "dataflow/templates",
        {
            "gcs_path": FLEX,
            "kind": "flex",
            "job_type": "JOB_TYPE_STREAMING",
            "fail": "Workflow failed.",
        },
    )
    body = {
        "launchParameter": {
            "jobName": "etl-1",
            "containerSpecGcsPath": FLEX,
            "parameters": {"table": "demo.events"},
        }
    }

    reply = await google.call("POST", f"{DATAFLOW}/flexTemplates:launch", json=body)
    classic = await google.call(
        "POST", f"{DATAFLOW}/templates:launch?gcsPath={FLEX}", json=launch_body("etl-2")
    )

    job = reply.json["job"]
    assert reply.status == 200
    assert job["type"] == "JOB_TYPE_STREAMING"
    assert classic.status == 400  # declared as a flex template only
    await google.advance(2)
    got = (await google.call("GET", f"{DATAFLOW}/jobs/{job['id']}")).json
    assert got["currentState"] == "JOB_STATE_FAILED"


async def test_jobs_can_be_found_by_name_with_the_list_filter(google: GoogleClient) -> None:
    await google.declare("dataflow/templates", {"gcs_path": WORD_COUNT, "done_after_seconds": 10})
    old = (await google.call("POST", LAUNCH, json=launch_body("report"))).json["job"]
    await google.advance(10)
    new = (await google.call("POST", LAUNCH, json=launch_body("report"))).json["job"]
    await google.call("POST", LAUNCH, json=launch_body("other"))

    active = (await google.call("GET", f"{DATAFLOW}/jobs?filter=ACTIVE&name=report")).json
    ended = (await google.call("GET", f"{DATAFLOW}/jobs?filter=TERMINATED&name=report")).json
    every = (await google.call("GET", f"{DATAFLOW}/jobs?filter=ALL")).json
    paged = (await google.call("GET", f"{DATAFLOW}/jobs?filter=ALL&pageSize=2")).json
    nothing = (await google.call("GET", f"{DATAFLOW}/jobs?filter=ACTIVE&name=none")).json

    assert [j["id"] for j in active["jobs"]] == [new["id"]]
    assert active["jobs"][0]["currentState"] == "JOB_STATE_RUNNING"
    assert [j["id"] for j in ended["jobs"]] == [old["id"]]
    assert ended["jobs"][0]["currentState"] == "JOB_STATE_DONE"
    assert [j["name"] for j in every["jobs"]] == ["report", "other", "report"]
    assert len(paged["jobs"]) == 2
    rest = (
        await google.call("GET", f"{DATAFLOW}/jobs?filter=ALL&pageToken={paged['nextPageToken']}")
    ).json
    assert [j["id"] for j in rest["jobs"]] == [old["id"]]
    assert "nextPageToken" not in rest
    assert nothing == {}


@pytest.mark.parametrize(
    ("url", "body", "message"),
    [
        (LAUNCH.replace("Word_Count", "Missing"), launch_body("a"), "Unable to open template file"),
        (LAUNCH, launch_body("Bad_Name"), "Invalid job name"),
        (LAUNCH, {"parameters": {}}, "job name (jobName) is required"),
        (f"{DATAFLOW}/templates:launch", launch_body("a"), "gcsPath"),
    ],
)
async def test_bad_launches_are_invalid_arguments(
    google: GoogleClient, url: str, body: dict[str, object], message: str
) -> None:
    await google.declare("dataflow/templates", {"gcs_path": WORD_COUNT})

    reply = await google.call("POST", url, json=body)

    assert reply.status == 400
    assert reply.json["error"]["status"] == "INVALID_ARGUMENT"
    assert message in reply.json["error"]["message"]


async def test_validate_only_launches_nothing_and_unknown_jobs_are_not_found(
    google: GoogleClient,
) -> None:
    await google.declare("dataflow/templates", {"gcs_path": WORD_COUNT})

    dry = await google.call("POST", f"{LAUNCH}&validateOnly=true", json=launch_body("dry"))
    unknown = await google.call("GET", f"{DATAFLOW}/jobs/2026-01-01_00_00_00-1")

    assert (dry.status, dry.json) == (200, {})
    _, jobs = await google.emulator.admin_async("GET", "/googleapis/dataflow/jobs")
    assert jobs == {"jobs": []}
    assert unknown.status == 404
    assert unknown.json["error"]["status"] == "NOT_FOUND"
    assert "could not be found" in unknown.json["error"]["message"]
