"""Long-running operations a relayed call starts, followed to their end (operation.follow).

The emulator's Compute stand-in answers `instanceGroupManagers.resize` with a
`compute#operation` that is DONE a few seconds later (or DONE with `error.errors[]`, or
never); its Cloud Build stand-in answers `triggers.run` with a google.longrunning Operation.
The relay records the run as Running with the operation, the operator polls it with the
object's credentials, and the outcome lands in the run and in LastRunSucceeded.
"""

from __future__ import annotations

from typing import Any

from tests.integration.conftest import Objects, condition, events_for, wait_for
from tests.integration.test_gcptask_lifecycle import make_queue, wait_phase
from tests.integration.test_gcptask_lifecycle import sample as task_sample
from tests.integration.test_relay import RelayWorld, last_run, ready, relay, run_now
from tests.integration.test_scheduled_lifecycle import sample

__all__ = ["relay"]

PROJECT = "ops-project"
ZONE = "europe-west3-a"
COMPUTE = "https://compute.googleapis.com/compute/v1"


def declare_mig(world: RelayWorld, name: str, **behaviour: Any) -> None:
    world.emulator.admin("PUT", "/googleapis/compute/instance-group-managers",
                         {"project": PROJECT, "zone": ZONE, "name": name, **behaviour})


def resize(name: str, mig: str, **operation: Any) -> dict[str, Any]:
    body = sample(name)
    spec = body["spec"]
    spec.update(delivery="Relay", schedule="0 0 1 1 *", retry={"retryCount": 0},
                operation={"follow": True, **operation})
    spec["target"] = {
        "uri": f"{COMPUTE}/projects/{PROJECT}/zones/{ZONE}/instanceGroupManagers/{mig}/resize"
               "?size=4",
        "method": "POST",
        "auth": {"oauth": {}},
    }
    return body


def polls(world: RelayWorld, path: str) -> int:
    doc = world.emulator.admin("GET", f"/googleapis/requests?path={path}&method=GET")
    return int(doc["count"])


def test_a_mig_resize_is_followed_to_done(relay: RelayWorld, sgc: Objects) -> None:
    ns = relay.namespace
    declare_mig(relay, "web", done_after_seconds=3)
    sgc.create(ns, resize("scale-up", "web"))
    ready(sgc, ns, "scale-up")
    run_now(sgc, ns, "scale-up", "first")
    running = last_run(sgc, ns, "scale-up", "Running", lambda r: r["result"] == "Running")
    op = running["operation"]
    assert op["done"] is False
    assert op["pollUrl"].startswith(f"{COMPUTE}/projects/{PROJECT}/zones/{ZONE}/operations/")
    obj = sgc.get(ns, "scale-up") or {}
    lrs = condition(obj, "LastRunSucceeded")
    assert (lrs["status"], lrs["reason"]) == ("Unknown", "OperationRunning")

    done = last_run(sgc, ns, "scale-up", "Succeeded", lambda r: r["result"] == "Succeeded")
    assert done["operation"]["done"] is True
    assert done["operation"]["response"]["status"] == "DONE"
    assert done["operation"]["polls"] >= 1
    lrs = condition(sgc.get(ns, "scale-up"), "LastRunSucceeded")
    assert (lrs["status"], lrs["reason"]) == ("True", "Succeeded")
    wait_for(lambda: any(e["reason"] == "OperationSucceeded" for e in
                         events_for(sgc.api.api_client, ns, "scale-up")),
             timeout=15, what="the OperationSucceeded event")


def test_an_operation_that_fails_after_the_200_is_a_failed_run(
    relay: RelayWorld, sgc: Objects
) -> None:
    ns = relay.namespace
    declare_mig(relay, "broken", fail="Quota 'CPUS' exceeded.", fail_after_polls=2)
    sgc.create(ns, resize("scale-broken", "broken"))
    ready(sgc, ns, "scale-broken")
    run_now(sgc, ns, "scale-broken", "first")
    run = last_run(sgc, ns, "scale-broken", "Failed", lambda r: r["result"] == "Failed")
    assert run["httpStatus"] == 200  # the call itself was accepted
    assert "Quota 'CPUS' exceeded." in run["operation"]["error"]["message"]
    lrs = condition(sgc.get(ns, "scale-broken"), "LastRunSucceeded")
    assert (lrs["status"], lrs["reason"]) == ("False", "OperationFailed")
    warnings = wait_for(lambda: [e for e in events_for(sgc.api.api_client, ns, "scale-broken")
                                 if e["reason"] == "OperationFailed"], timeout=15,
                        what="the OperationFailed event")
    assert warnings[0]["type"] == "Warning"
    assert run["operation"]["name"] in warnings[0]["message"]


def _trigger(world: RelayWorld, name: str, trigger: str, **behaviour: Any) -> dict[str, Any]:
    world.emulator.admin("PUT", "/googleapis/cloudbuild/triggers",
                         {"project": PROJECT, "trigger": trigger, **behaviour})
    body = sample(name)
    spec = body["spec"]
    spec.update(delivery="Relay", schedule="0 0 1 1 *", retry={"retryCount": 0},
                operation={"follow": True})
    spec["target"] = {"uri": f"https://cloudbuild.googleapis.com/v1/projects/{PROJECT}/"
                             f"triggers/{trigger}:run", "method": "POST",
                      "body": {"json": {"branchName": "main"}}, "auth": {"oauth": {}}}
    return body


def test_a_cloud_build_run_is_followed_to_success_and_to_failure(
    relay: RelayWorld, sgc: Objects
) -> None:
    ns = relay.namespace
    sgc.create(ns, _trigger(relay, "build-ok", "release", done_after_seconds=2))
    sgc.create(ns, _trigger(relay, "build-bad", "broken", fail="Build failed",
                            done_after_seconds=2))
    for name in ("build-ok", "build-bad"):
        ready(sgc, ns, name)
        run_now(sgc, ns, name, "first")
    ok = last_run(sgc, ns, "build-ok", "done", lambda r: r["result"] != "Running")
    assert ok["result"] == "Succeeded"
    assert ok["operation"]["name"].startswith(f"operations/build/{PROJECT}/")
    assert ok["operation"]["pollUrl"] == f"https://cloudbuild.googleapis.com/v1/{ok['operation']['name']}"
    bad = last_run(sgc, ns, "build-bad", "done", lambda r: r["result"] != "Running")
    assert bad["result"] == "Failed"
    assert "Build failed" in bad["operation"]["error"]["message"]


def test_an_operation_that_never_finishes_stops_at_its_timeout(
    relay: RelayWorld, sgc: Objects
) -> None:
    ns = relay.namespace
    declare_mig(relay, "stuck", never_done=True)
    sgc.create(ns, resize("scale-stuck", "stuck", timeoutSeconds=5))
    ready(sgc, ns, "scale-stuck")
    run_now(sgc, ns, "scale-stuck", "first")
    run = last_run(sgc, ns, "scale-stuck", "given up", lambda r: r["result"] == "Failed")
    assert run["operation"]["done"] is False
    assert run["operation"]["error"]["code"] == 4
    lrs = condition(sgc.get(ns, "scale-stuck"), "LastRunSucceeded")
    assert (lrs["status"], lrs["reason"]) == ("False", "DeadlineExceeded")
    path = run["operation"]["pollUrl"].removeprefix("https://compute.googleapis.com")
    after = polls(relay, path)
    # no poll after the deadline: wait until the stand-in has served a poll of another
    # operation started now (a positive signal that the follower kept running)
    declare_mig(relay, "later", done_after_seconds=1)
    sgc.create(ns, resize("scale-later", "later"))
    ready(sgc, ns, "scale-later")
    run_now(sgc, ns, "scale-later", "first")
    last_run(sgc, ns, "scale-later", "done", lambda r: r["result"] == "Succeeded")
    assert polls(relay, path) == after


def test_a_relayed_task_succeeds_only_once_its_operation_is_done(
    relay: RelayWorld, gtask: Objects
) -> None:
    ns = relay.namespace
    declare_mig(relay, "tasked", done_after_seconds=3)
    make_queue(relay.emulator, f"{ns}-ops")
    body = task_sample("grow", f"{ns}-ops", "/x", delivery="Relay",
                       operation={"follow": True})
    body["spec"]["target"] = {
        "uri": f"{COMPUTE}/projects/{PROJECT}/zones/{ZONE}/instanceGroupManagers/tasked/resize"
               "?size=3", "method": "POST", "auth": {"oauth": {}}}
    gtask.create(ns, body)
    running = wait_phase(gtask, ns, "grow", "Running", timeout=60)
    assert condition(running, "Succeeded")["reason"] == "OperationRunning"
    assert running["status"]["operation"]["done"] is False
    done = wait_phase(gtask, ns, "grow", "Succeeded", timeout=60)
    assert done["status"]["operation"]["done"] is True
    assert done["status"]["completionTime"]


def test_a_pending_operation_is_resumed_from_status_after_a_restart(
    relay: RelayWorld, sgc: Objects
) -> None:
    ns = relay.namespace
    declare_mig(relay, "resumed", done_after_seconds=8)
    sgc.create(ns, resize("scale-resumed", "resumed"))
    ready(sgc, ns, "scale-resumed")
    run_now(sgc, ns, "scale-resumed", "first")
    running = last_run(sgc, ns, "scale-resumed", "Running", lambda r: r["result"] == "Running")
    relay.operator.kill()  # SIGKILL: nothing is flushed, the follower's memory is gone
    relay.operator.start()
    done = last_run(sgc, ns, "scale-resumed", "Succeeded", lambda r: r["result"] == "Succeeded")
    assert done["operation"]["name"] == running["operation"]["name"]
    assert done["attempts"] == 1
    resize_path = (f"/compute/v1/projects/{PROJECT}/zones/{ZONE}"
                   "/instanceGroupManagers/resumed/resize")
    calls = relay.emulator.admin("GET", f"/googleapis/requests?path={resize_path}&method=POST")
    assert calls["count"] == 1  # the call was made once; only its operation was polled again
    runs = (sgc.get(ns, "scale-resumed") or {})["status"]["runs"]
    assert len(runs) == 1
