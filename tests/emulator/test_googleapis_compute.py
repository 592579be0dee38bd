"""The simulated Compute API: MIG resize, Cloud Armor patchRule, and their operations.

Why: the relay follows a `compute#operation` to its end through the `selfLink`, and must
report a failed or never-ending operation as such. These tests call the simulator as any
client does - `https://compute.googleapis.com/...` URLs through the emulator's host map,
with aiohttp - and check the shapes against the Compute v1 reference (see the module
docstring of `gcpcall.emulator.googleapis_compute`). Operations finish by moving the
emulator's clock or by polling, never by waiting.
"""

from __future__ import annotations

import asyncio
import datetime
import re
import uuid
from typing import Any

import pytest

from tests.emulator.googleapis_client import GoogleClient

COMPUTE = "https://compute.googleapis.com/compute/v1"
ZONE_MIG = {"project": "demo-project", "zone": "europe-west3-a", "name": "web"}
REGION_MIG = {"project": "demo-project", "region": "europe-west3", "name": "api"}
RESIZE = f"{COMPUTE}/projects/demo-project/zones/europe-west3-a/instanceGroupManagers/web/resize"
POLICY = f"{COMPUTE}/projects/demo-project/global/securityPolicies/edge"
RULE = {
    "priority": 1000,
    "action": "allow",
    "match": {"versionedExpr": "SRC_IPS_V1", "config": {"srcIpRanges": ["203.0.113.0/24"]}},
}


def timestamp(text: str) -> datetime.datetime:
    moment = datetime.datetime.fromisoformat(text)
    assert moment.tzinfo is not None
    return moment


async def test_an_undeclared_mig_answers_compute_s_404(google: GoogleClient) -> None:
    reply = await google.call("POST", f"{RESIZE}?size=3")

    path = "projects/demo-project/zones/europe-west3-a/instanceGroupManagers/web"
    message = f"The resource '{path}' was not found"
    assert reply.status == 404
    assert reply.json == {
        "error": {
            "code": 404,
            "message": message,
            "errors": [{"message": message, "domain": "global", "reason": "notFound"}],
        }
    }
    assert reply.headers["Content-Type"].startswith("application/json")


async def test_zonal_resize_returns_an_operation_that_finishes_on_the_clock(
    google: GoogleClient,
) -> None:
    await google.declare("compute/instance-group-managers", {**ZONE_MIG, "target_size": 2})

    created = await google.call("POST", f"{RESIZE}?size=4")

    assert created.status == 200
    op = created.json
    zone = f"{COMPUTE}/projects/demo-project/zones/europe-west3-a"
    assert op["kind"] == "compute#operation"
    assert re.fullmatch(r"[1-9]\d{18}", op["id"])
    assert re.fullmatch(r"operation-\d{13}-[0-9a-f]{13}-[0-9a-f]{8}-[0-9a-f]{8}", op["name"])
    assert op["zone"] == zone
    assert "region" not in op
    assert op["operationType"] == "compute.instanceGroupManagers.resize"
    assert op["targetLink"] == f"{zone}/instanceGroupManagers/web"
    assert re.fullmatch(r"\d{19}", op["targetId"])
    assert (op["status"], op["progress"]) == ("PENDING", 0)
    assert "startTime" not in op
    assert "endTime" not in op
    assert op["selfLink"] == f"{zone}/operations/{op['name']}"
    timestamp(op["insertTime"])

    running = (await google.call("GET", op["selfLink"])).json
    assert running["status"] == "RUNNING"
    assert 0 <= running["progress"] < 100
    assert running["startTime"] == op["insertTime"]
    assert {k: running[k] for k in ("id", "name", "selfLink")} == {
        k: op[k] for k in ("id", "name", "selfLink")
    }

    await google.advance(2.0)  # the default done_after_seconds
    done = (await google.call("GET", op["selfLink"])).json
    assert (done["status"], done["progress"]) == ("DONE", 100)
    assert timestamp(done["endTime"]) - timestamp(done["insertTime"]) == datetime.timedelta(
        seconds=2
    )
    assert "error" not in done
    assert "httpErrorStatusCode" not in done
    mig = (await google.call("GET", RESIZE.removesuffix("/resize"))).json
    assert mig["kind"] == "compute#instanceGroupManager"
    assert mig["targetSize"] == 4
    assert mig["selfLink"] == op["targetLink"]
    assert mig["id"] == op["targetId"]


async def test_regional_resize_names_the_region(google: GoogleClient) -> None:
    await google.declare("compute/instance-group-managers", REGION_MIG)
    url = f"{COMPUTE}/projects/demo-project/regions/europe-west3/instanceGroupManagers/api"

    op = (await google.call("POST", f"{url}/resize?size=1")).json

    region = f"{COMPUTE}/projects/demo-project/regions/europe-west3"
    assert op["region"] == region
    assert "zone" not in op
    assert op["operationType"] == "compute.regionInstanceGroupManagers.resize"
    assert op["targetLink"] == url
    assert op["selfLink"] == f"{region}/operations/{op['name']}"
    assert (await google.call("GET", op["selfLink"])).status == 200
    zonal = url.replace("regions/europe-west3", "zones/europe-west3")
    assert (await google.call("POST", f"{zonal}/resize?size=1")).status == 404


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("", "Required field 'size' not specified"),
        ("?size=-1", "Invalid value for field 'size': '-1'. Must be greater than or equal to 0."),
        ("?size=many", "Invalid value for field 'size': 'many'."),
    ],
)
async def test_resize_needs_a_size(google: GoogleClient, query: str, message: str) -> None:
    await google.declare("compute/instance-group-managers", ZONE_MIG)

    reply = await google.call("POST", f"{RESIZE}{query}")

    assert reply.status == 400
    assert reply.json["error"]["message"].startswith(message)
    assert reply.json["error"]["errors"][0]["domain"] == "global"


async def test_patch_rule_is_a_global_operation_and_changes_the_rule(
    google: GoogleClient,
) -> None:
    await google.declare(
        "compute/security-policies",
        {"project": "demo-project", "name": "edge", "rules": [{**RULE, "action": "deny(403)"}]},
    )

    reply = await google.call("POST", f"{POLICY}/patchRule?priority=1000", json=RULE)

    op = reply.json
    assert reply.status == 200
    assert op["operationType"] == "patchRule"
    assert op["targetLink"] == POLICY
    assert "zone" not in op
    assert "region" not in op
    assert op["selfLink"] == f"{COMPUTE}/projects/demo-project/global/operations/{op['name']}"
    rule = (await google.call("GET", f"{POLICY}/getRule?priority=1000")).json
    assert rule["action"] == "allow"
    assert rule["match"] == RULE["match"]
    assert rule["kind"] == "compute#securityPolicyRule"
    default = (await google.call("GET", f"{POLICY}/getRule?priority=2147483647")).json
    assert default["match"]["config"]["srcIpRanges"] == ["*"]
    await google.advance(5)
    waited = await google.call("POST", f"{op['selfLink']}/wait")
    assert waited.json["status"] == "DONE"


async def test_patch_rule_at_a_priority_without_a_rule_is_invalid(google: GoogleClient) -> None:
    await google.declare("compute/security-policies", {"project": "demo-project", "name": "edge"})

    reply = await google.call("POST", f"{POLICY}/patchRule", json=RULE)  # priority 0
    missing = await google.call("POST", f"{POLICY.replace('edge', 'other')}/patchRule", json=RULE)

    assert reply.status == 400
    assert reply.json["error"]["message"] == (
        "Invalid value for field 'priority': '0'. edge does not contain a rule at priority 0."
    )
    assert reply.json["error"]["errors"][0]["reason"] == "invalid"
    assert missing.status == 404


async def test_a_failing_operation_reports_the_error_as_compute_does(
    google: GoogleClient,
) -> None:
    await google.declare(
        "compute/instance-group-managers",
        {
            **ZONE_MIG,
            "target_size": 2,
            "fail": "Quota 'CPUS' exceeded.  Limit: 24.0 in region europe-west3.",
        },
    )
    op = (await google.call("POST", f"{RESIZE}?size=40")).json

    await google.advance(2)
    done = (await google.call("GET", op["selfLink"])).json

    assert done["status"] == "DONE"
    assert done["error"] == {
        "errors": [
            {
                "code": "QUOTA_EXCEEDED",
                "message": "Quota 'CPUS' exceeded.  Limit: 24.0 in region europe-west3.",
            }
        ]
    }
    assert (done["httpErrorStatusCode"], done["httpErrorMessage"]) == (403, "FORBIDDEN")
    mig = (await google.call("GET", RESIZE.removesuffix("/resize"))).json
    assert mig["targetSize"] == 2  # a failed resize changes nothing


async def test_operations_can_finish_after_polls_and_fail_there(google: GoogleClient) -> None:
    await google.declare(
        "compute/instance-group-managers",
        {
            **ZONE_MIG,
            "fail_after_polls": 3,
            "fail_code": "RESOURCE_NOT_READY",
            "fail_http_status": 400,
        },
    )
    await google.advance(3600)  # time alone does not finish it
    op = (await google.call("POST", f"{RESIZE}?size=1")).json

    states = [(await google.call("GET", op["selfLink"])).json for _ in range(4)]

    assert [s["status"] for s in states] == ["RUNNING", "RUNNING", "DONE", "DONE"]
    assert states[2]["error"]["errors"][0]["code"] == "RESOURCE_NOT_READY"
    assert (states[2]["httpErrorStatusCode"], states[2]["httpErrorMessage"]) == (
        400,
        "BAD REQUEST",
    )
    polls = await google.requests(
        host="compute.googleapis.com",
        path=op["selfLink"].removeprefix("https://compute.googleapis.com"),
    )
    assert [p["rpc"] for p in polls] == ["compute.zoneOperations.get"] * 4
    assert [p["status"] for p in polls] == [200] * 4
    _, listed = await google.emulator.admin_async("GET", "/googleapis/compute/operations")
    assert [o["polls"] for o in listed["operations"]] == [4]


async def test_wait_returns_when_done_or_after_the_bounded_wait(google: GoogleClient) -> None:
    await google.declare("compute/instance-group-managers", {**ZONE_MIG, "done_after_seconds": 60})
    stuck = {"project": "demo-project", "zone": "europe-west3-a", "name": "stuck"}
    await google.declare("compute/instance-group-managers", {**stuck, "never_done": True})
    status, settings = await google.emulator.admin_async(
        "POST", "/googleapis/settings", {"max_wait_seconds": 30}
    )
    assert (status, settings) == (200, {"max_wait_seconds": 30.0})
    op = (await google.call("POST", f"{RESIZE}?size=1")).json
    never = (await google.call("POST", f"{RESIZE.replace('/web/', '/stuck/')}?size=1")).json

    waiting = asyncio.ensure_future(google.call("POST", f"{op['selfLink']}/wait"))
    await asyncio.sleep(0.05)
    assert not waiting.done()  # it blocks while the operation runs
    await google.advance(60)  # the operation's time comes: wait answers DONE
    assert (await asyncio.wait_for(waiting, 10)).json["status"] == "DONE"

    waiting = asyncio.ensure_future(google.call("POST", f"{never['selfLink']}/wait"))
    await asyncio.sleep(0.05)
    await google.advance(30)  # the wait's bound passes: it answers the current state
    assert (await asyncio.wait_for(waiting, 10)).json["status"] == "RUNNING"
    await google.advance(10**6)
    assert (await google.call("GET", never["selfLink"])).json["status"] == "RUNNING"


async def test_a_repeated_request_id_returns_the_first_operation(google: GoogleClient) -> None:
    await google.declare("compute/instance-group-managers", ZONE_MIG)
    request_id = str(uuid.uuid4())

    first = (await google.call("POST", f"{RESIZE}?size=3&requestId={request_id}")).json
    again = (await google.call("POST", f"{RESIZE}?size=5&requestId={request_id}")).json
    other = (await google.call("POST", f"{RESIZE}?size=5&requestId={uuid.uuid4()}")).json
    zero = await google.call("POST", f"{RESIZE}?size=5&requestId={uuid.UUID(int=0)}")

    assert first["clientOperationId"] == request_id
    assert again["name"] == first["name"]
    assert other["name"] != first["name"]
    assert zero.status == 400
    assert "must be a valid UUID" in zero.json["error"]["message"]
    mig = (await google.call("GET", RESIZE.removesuffix("/resize"))).json
    assert mig["targetSize"] == 5  # the repeated request changed nothing, the other did


async def test_unknown_operations_and_bad_declarations(google: GoogleClient) -> None:
    op_url = f"{COMPUTE}/projects/demo-project/zones/europe-west3-a/operations/operation-1"
    reply = await google.call("GET", op_url)
    assert reply.status == 404
    assert reply.json["error"]["errors"][0]["reason"] == "notFound"

    admin = google.emulator.admin_async
    bad: list[dict[str, Any]] = [
        {"project": "p", "name": "m"},  # neither zone nor region
        {"project": "p", "zone": "z", "region": "r", "name": "m"},
        {"project": "p", "zone": "z", "name": "m", "done_after_seconds": -1},
        {"project": "p", "zone": "z", "name": "m", "fail": 3},
        {"project": "p", "zone": "z", "name": "m", "done_after_polls": 0},
        {"project": "p", "zone": "z", "name": "a/b"},
    ]
    for doc in bad:
        status, body = await admin("PUT", "/googleapis/compute/instance-group-managers", doc)
        assert status == 400, (doc, body)
    status, body = await admin("DELETE", "/googleapis/compute/instance-group-managers", ZONE_MIG)
    assert (status, body) == (200, {"deleted": False})
