"""Per-run payloads: templates rendered by the relay, so each run is unique and a retry of
one run is the same call again (Dataflow's unique jobName, the seed article's problem)."""

from __future__ import annotations

import datetime
from typing import Any

from tests.integration.conftest import TARGET_HOST, Objects, condition, wait_for
from tests.integration.test_relay import RelayWorld, last_run, ready, relay, run_now
from tests.integration.test_scheduled_lifecycle import sample

__all__ = ["relay"]

PROJECT = "etl-project"
TEMPLATE = "gs://dataflow-templates/latest/Word_Count"
LAUNCH = (f"https://dataflow.googleapis.com/v1b3/projects/{PROJECT}/locations/us-central1/"
          f"templates:launch?gcsPath={TEMPLATE}")


def dataflow(world: RelayWorld, **behaviour: Any) -> None:
    world.emulator.admin("PUT", "/googleapis/dataflow/templates",
                         {"gcs_path": TEMPLATE, "done_after_seconds": 600, **behaviour})


def nightly(name: str, job_name: str, *, delivery: str = "Relay", **spec: Any) -> dict[str, Any]:
    body = sample(name)
    body["spec"].update(delivery=delivery, schedule="0 2 * * *", retry={"retryCount": 0}, **spec)
    body["spec"]["target"] = {
        "uri": LAUNCH, "method": "POST",
        "headers": [{"name": "Content-Type", "value": "application/json"}],
        "body": {"json": {"jobName": job_name,
                          "parameters": {"inputFile": "gs://in/*.txt", "output": "gs://out/wc"}}},
        "auth": {"oauth": {}},
    }
    return body


def _later_second(sgc: Objects, ns: str, name: str) -> bool:
    runs = ((sgc.get(ns, name) or {}).get("status") or {}).get("runs") or []
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return not runs or now > runs[0]["scheduleTime"]


def launched(world: RelayWorld) -> list[str]:
    return [j["name"] for j in world.emulator.admin("GET", "/googleapis/dataflow/jobs")["jobs"]]


def test_each_run_launches_its_own_dataflow_job(relay: RelayWorld, sgc: Objects) -> None:
    ns = relay.namespace
    dataflow(relay)
    before = set(launched(relay))
    sgc.create(ns, nightly("wordcount", "wordcount-{{ run.id }}"))
    ready(sgc, ns, "wordcount")
    for i in range(3):
        # Cloud Scheduler's schedule time has whole seconds: two run-now requests in one
        # second would be one execution. Each goes out in a later second than the last run.
        wait_for(lambda: _later_second(sgc, ns, "wordcount"), what="the next second")
        run_now(sgc, ns, "wordcount", f"run-{i}")
        wait_for(lambda n=i + 1: len((sgc.get(ns, "wordcount") or {})["status"].get("runs") or [])
                 == n, timeout=60, what=f"run {i + 1} recorded")
    runs = (sgc.get(ns, "wordcount") or {})["status"]["runs"]
    assert [r["result"] for r in runs] == ["Succeeded"] * 3
    names = {r["request"]["fields"]["spec.target.body.json.jobName"] for r in runs}
    assert names == {f"wordcount-{r['id']}" for r in runs}
    assert len(names) == 3
    assert set(launched(relay)) - before == names


def test_the_same_spec_with_direct_is_refused_naming_the_templated_field(
    relay: RelayWorld, sgc: Objects
) -> None:
    ns = relay.namespace
    sgc.create(ns, nightly("wordcount-direct", "wordcount-{{ run.id }}", delivery="Direct"))
    obj = ready(sgc, ns, "wordcount-direct", "InvalidSpec")
    message = condition(obj, "Ready")["message"]
    assert message.startswith("spec.target.body.json.jobName: ")
    assert "only delivery: Relay renders" in message


def test_a_fixed_job_name_run_twice_directly_meets_the_409(
    relay: RelayWorld, sgc: Objects
) -> None:
    """The problem templates solve: Cloud Scheduler sends the same jobName every run."""
    ns = relay.namespace
    dataflow(relay)
    sgc.create(ns, nightly("fixed", f"fixed-{ns}", delivery="Direct"))
    ready(sgc, ns, "fixed")
    run_now(sgc, ns, "fixed", "first")
    last_run(sgc, ns, "fixed", "the first run", lambda r: r["result"] == "Succeeded")
    run_now(sgc, ns, "fixed", "second")
    second = last_run(sgc, ns, "fixed", "the second run", lambda r: r["result"] == "Failed")
    assert second["code"] in (6, 10)  # ALREADY_EXISTS / ABORTED: HTTP 409
    lrs = condition(sgc.get(ns, "fixed"), "LastRunSucceeded")
    assert (lrs["status"], lrs["reason"]) == ("False", "TargetError")


def test_a_retry_after_a_lost_answer_meets_its_own_409_and_counts_as_launched_once(
    relay: RelayWorld, sgc: Objects
) -> None:
    """The launch is made but its answer comes after the relay gave up (the attempt
    deadline): Cloud Scheduler retries, the retry renders the same name, Dataflow answers
    409 for the job the first attempt launched, and the run is that launch, once."""
    ns = relay.namespace
    dataflow(relay, answer_delay_seconds=12)
    try:
        body = nightly("slow-launch", "slow-{{ run.id }}", attemptDeadlineSeconds=15)
        body["spec"]["retry"] = {"retryCount": 2, "minBackoffSeconds": 1, "maxBackoffSeconds": 1}
        sgc.create(ns, body)
        ready(sgc, ns, "slow-launch")
        run_now(sgc, ns, "slow-launch", "first")
        run = last_run(sgc, ns, "slow-launch", "launched once",
                       lambda r: r["result"] == "Succeeded")
    finally:
        dataflow(relay)
    assert run["attempts"] == 2
    assert run["httpStatus"] == 409
    assert "an earlier attempt of this run made it" in run["message"]
    name = run["request"]["fields"]["spec.target.body.json.jobName"]
    assert launched(relay).count(name) == 1


def test_a_dated_path_and_a_templated_header(relay: RelayWorld, sgc: Objects) -> None:
    ns = relay.namespace
    body = sample("dated")
    body["spec"].update(delivery="Relay", schedule="0 0 1 1 *")
    body["spec"]["target"].update(
        uri=f"https://{TARGET_HOST}/reports/{ns}/{{{{ now | date('%Y%m%d') }}}}.csv",
        headers=[{"name": "X-Run", "value": "{{ run.id }}"},
                 {"name": "X-Where", "value": "{{ object.namespace }}/{{ object.name }}"}])
    sgc.create(ns, body)
    ready(sgc, ns, "dated")
    run_now(sgc, ns, "dated", "first")
    run = last_run(sgc, ns, "dated", "the run", lambda r: r["result"] == "Succeeded")
    got = relay.target.received(f"/reports/{ns}/")
    assert len(got) == 1
    day = run["attemptTime"][:10].replace("-", "")
    assert got[0].path == f"/reports/{ns}/{day}.csv"
    assert got[0].headers["X-Run"] == run["id"]
    assert got[0].headers["X-Where"] == f"{ns}/dated"
