"""The simulated Cloud Build API: triggers.run and its google.longrunning Operation.

Why: this is the google.longrunning family of LROs the relay follows (`GET /v1/{name}`
until `done`, then `response` or `error`). The shapes are checked against the Cloud Build
v1 reference and captured answers (see `gcpcall.emulator.googleapis_cloudbuild`); the
requests go through the emulator's host map as any client's would.
"""

from __future__ import annotations

import base64
import datetime
import uuid

from tests.emulator.googleapis_client import GoogleClient

CLOUDBUILD = "https://cloudbuild.googleapis.com/v1"
METADATA = "type.googleapis.com/google.devtools.cloudbuild.v1.BuildOperationMetadata"
BUILD = "type.googleapis.com/google.devtools.cloudbuild.v1.Build"


async def test_running_a_global_trigger_answers_a_longrunning_operation(
    google: GoogleClient,
) -> None:
    trigger = await google.declare(
        "cloudbuild/triggers",
        {"project": "demo-project", "trigger": "nightly", "done_after_seconds": 30},
    )

    reply = await google.call(
        "POST",
        f"{CLOUDBUILD}/projects/demo-project/triggers/nightly:run",
        json={"branchName": "main"},
    )

    assert reply.status == 200
    op = reply.json
    assert set(op) == {"name", "metadata"}  # `done` is false, so proto3 JSON leaves it out
    assert op["metadata"]["@type"] == METADATA
    build = op["metadata"]["build"]
    uuid.UUID(build["id"])
    assert op["name"] == (
        "operations/build/demo-project/" + base64.b64encode(build["id"].encode()).decode()
    )
    assert build["status"] == "QUEUED"
    assert build["projectId"] == "demo-project"
    assert build["buildTriggerId"] == trigger["id"]
    assert build["name"] == f"projects/demo-project/locations/global/builds/{build['id']}"
    assert build["source"] == {"branchName": "main"}
    assert build["createTime"].endswith("Z")

    working = (await google.call("GET", f"{CLOUDBUILD}/{op['name']}")).json
    assert "done" not in working
    assert working["metadata"]["build"]["status"] == "WORKING"
    assert "startTime" in working["metadata"]["build"]

    await google.advance(30)
    done = (await google.call("GET", f"{CLOUDBUILD}/{op['name']}")).json
    assert done["done"] is True
    assert "error" not in done
    assert done["response"]["@type"] == BUILD
    assert done["response"]["status"] == "SUCCESS"
    assert done["response"]["id"] == build["id"]
    finished = datetime.datetime.fromisoformat(done["response"]["finishTime"])
    created = datetime.datetime.fromisoformat(done["response"]["createTime"])
    assert finished - created == datetime.timedelta(seconds=30)
    assert done["metadata"]["build"]["status"] == "SUCCESS"
    same = await google.call("GET", f"{CLOUDBUILD}/projects/demo-project/builds/{build['id']}")
    assert same.json["status"] == "SUCCESS"


async def test_a_failing_build_ends_with_a_google_rpc_status(google: GoogleClient) -> None:
    await google.declare(
        "cloudbuild/triggers",
        {
            "project": "demo-project",
            "location": "europe-west3",
            "trigger": "deploy",
            "fail_after_polls": 2,
        },
    )
    url = f"{CLOUDBUILD}/projects/demo-project/locations/europe-west3/triggers/deploy:run"

    op = (
        await google.call("POST", url, json={"projectId": "demo-project", "triggerId": "deploy"})
    ).json
    first = (await google.call("GET", f"{CLOUDBUILD}/{op['name']}")).json
    second = (await google.call("GET", f"{CLOUDBUILD}/{op['name']}")).json

    assert op["name"].startswith("projects/demo-project/locations/europe-west3/operations/")
    assert "done" not in first
    assert second["done"] is True
    assert second["error"] == {"code": 2, "message": "Build failed; check build logs for details"}
    assert "response" not in second
    build = second["metadata"]["build"]
    assert build["status"] == "FAILURE"
    assert build["failureInfo"]["detail"] == "Build failed; check build logs for details"
    polls = await google.requests(rpc="cloudbuild.projects.locations.operations.get")
    assert len(polls) == 2


async def test_undeclared_or_wrongly_addressed_triggers_are_not_found(
    google: GoogleClient,
) -> None:
    await google.declare(
        "cloudbuild/triggers",
        {"project": "demo-project", "location": "europe-west3", "trigger": "regional"},
    )

    unknown = await google.call("POST", f"{CLOUDBUILD}/projects/demo-project/triggers/x:run")
    # "The POST request that does not include the location endpoint in the path can only be
    # used when running global triggers."
    regional = await google.call(
        "POST", f"{CLOUDBUILD}/projects/demo-project/triggers/regional:run"
    )
    operation = await google.call("GET", f"{CLOUDBUILD}/operations/build/demo-project/bm9uZQ==")

    for reply in (unknown, regional, operation):
        assert reply.status == 404
        assert reply.json == {
            "error": {
                "code": 404,
                "message": "Requested entity was not found.",
                "status": "NOT_FOUND",
            }
        }


async def test_admin_lists_triggers_and_operations(google: GoogleClient) -> None:
    await google.declare(
        "cloudbuild/triggers",
        {"project": "p", "trigger": "t", "never_done": True, "substitutions": {"_ENV": "dev"}},
    )
    op = (await google.call("POST", f"{CLOUDBUILD}/projects/p/triggers/t:run")).json
    await google.advance(10**6)
    await google.call("GET", f"{CLOUDBUILD}/{op['name']}")

    _, listed = await google.emulator.admin_async("GET", "/googleapis/cloudbuild/operations")
    _, declared = await google.emulator.admin_async("GET", "/googleapis/declarations")

    [operation] = listed["operations"]
    assert operation["name"] == op["name"]
    assert operation["polls"] == 1
    assert "done" not in operation
    assert operation["metadata"]["build"]["substitutions"] == {"_ENV": "dev"}
    [trigger] = declared["cloudbuild"]["triggers"]
    assert (trigger["location"], trigger["never_done"]) == ("global", True)
    status, _ = await google.emulator.admin_async(
        "PUT",
        "/googleapis/cloudbuild/triggers",
        {"project": "p", "trigger": "t", "substitutions": {"a": 1}},
    )
    assert status == 400
