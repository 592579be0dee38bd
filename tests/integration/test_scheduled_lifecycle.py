"""ScheduledGcpCall end to end: apply -> Cloud Scheduler job -> status, through the operator.

Runs the operator process against the real API server and the emulator; asserts on what
the emulator holds (through the official Cloud Scheduler client) and on the object's status.
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from google.cloud import scheduler_v1
from tests.integration.conftest import (
    CLUSTER,
    LOCATION,
    PROJECT,
    TARGET_HOST,
    Emulator,
    Objects,
    Target,
    condition,
    events_for,
    wait_for,
)

pytestmark = pytest.mark.usefixtures("operator")


def job_name(namespace: str, name: str) -> str:
    job_id = f"{CLUSTER}_{namespace}_{name.replace('.', '_')}"
    return f"projects/{PROJECT}/locations/{LOCATION}/jobs/{job_id}"


def sample(name: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "schedule": "5 * * * *",
        "timeZone": "Europe/Berlin",
        "target": {
            "uri": f"https://{TARGET_HOST}/compute/v1/projects/p/zones/z"
            "/instanceGroupManagers/ig/resize?size=4",
            "method": "POST",
            "headers": [{"name": "Content-Type", "value": "application/json"}],
            "body": {"json": {"size": 4}},
            "auth": {
                "oauth": {"scope": "https://www.googleapis.com/auth/cloud-platform"},
                "serviceAccountEmail": "runner@test-project.iam.gserviceaccount.com",
            },
        },
        "retry": {"retryCount": 2, "minBackoffSeconds": 5, "maxBackoffSeconds": 60},
        "attemptDeadlineSeconds": 120,
    }
    body.update(spec)
    return {
        "apiVersion": "gcpcall.dev/v1alpha1",
        "kind": "ScheduledGcpCall",
        "metadata": {"name": name},
        "spec": body,
    }


def ready(sgc: Objects, namespace: str, name: str, reason: str = "UpToDate") -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = sgc.get(namespace, name)
        c = condition(obj, "Ready")
        gen = (obj or {}).get("metadata", {}).get("generation")
        if c.get("reason") == reason and obj and obj["status"].get("observedGeneration") == gen:
            return obj
        return None

    return dict(wait_for(check, what=f"{name} Ready reason {reason}"))


def events_of(sgc: Objects, namespace: str, name: str, *reasons: str) -> list[dict[str, Any]]:
    """Wait until events of all these reasons exist (the operator posts events in the
    background, paced), and return them."""
    def found() -> list[dict[str, Any]]:
        events = [e for e in events_for(sgc.api.api_client, namespace, name)
                  if e["reason"] in reasons]
        return events if set(reasons) <= {e["reason"] for e in events} else []

    return list(wait_for(found, timeout=15, what=f"events {reasons} of {name}"))


def test_apply_creates_job_with_every_field(
    sgc: Objects, namespace: str, emulator: Emulator
) -> None:
    sgc.create(namespace, sample("scale-up"))
    obj = ready(sgc, namespace, "scale-up")
    status = obj["status"]
    assert status["jobName"] == job_name(namespace, "scale-up")
    assert status["state"] == "ENABLED"
    assert status["nextRunTime"]
    assert condition(obj, "Ready")["status"] == "True"
    assert condition(obj, "LastRunSucceeded")["reason"] == "NoRunYet"

    job = emulator.scheduler().get_job(name=status["jobName"])
    assert job.schedule == "5 * * * *"
    assert job.time_zone == "Europe/Berlin"
    assert job.http_target.uri.startswith(f"https://{TARGET_HOST}/compute/v1/")
    assert job.http_target.http_method == scheduler_v1.HttpMethod.POST
    assert job.http_target.headers["Content-Type"] == "application/json"
    assert job.http_target.body == b'{"size":4}' or b'"size"' in job.http_target.body
    assert job.http_target.oauth_token.service_account_email == (
        "runner@test-project.iam.gserviceaccount.com")
    assert job.retry_config.retry_count == 2
    assert job.attempt_deadline == datetime.timedelta(seconds=120)
    assert f"managed-by: gcpcall-operator {CLUSTER}/{namespace}/scale-up" in job.description
    assert events_of(sgc, namespace, "scale-up", "Created")



def writes_of(emulator: Emulator, method: str) -> int:
    return len(emulator.calls(method))


def test_spec_edit_updates_only_changed_fields_and_label_edit_writes_nothing(
    sgc: Objects, namespace: str, emulator: Emulator
) -> None:
    sgc.create(namespace, sample("edit-me"))
    obj = ready(sgc, namespace, "edit-me")
    name = obj["status"]["jobName"]
    before = emulator.scheduler().get_job(name=name)

    updates = writes_of(emulator, "UpdateJob")
    sgc.patch(namespace, "edit-me", {"spec": {"schedule": "15 3 * * *"}})
    obj = ready(sgc, namespace, "edit-me")
    wait_for(lambda: writes_of(emulator, "UpdateJob") == updates + 1, what="one UpdateJob")
    after = emulator.scheduler().get_job(name=name)
    assert after.schedule == "15 3 * * *"
    # only the schedule changed: every other field is as before
    assert after.http_target == before.http_target
    assert after.retry_config == before.retry_config
    assert after.time_zone == before.time_zone
    updated = events_of(sgc, namespace, "edit-me", "Updated")
    assert "schedule" in updated[0]["message"]
    assert "time_zone" not in updated[0]["message"]

    gets = writes_of(emulator, "GetJob")
    updates = writes_of(emulator, "UpdateJob")
    sgc.patch(namespace, "edit-me", {"metadata": {"labels": {"team": "a"}}})
    # the label edit is seen (a GetJob), and it changes nothing Google sees: no write
    wait_for(lambda: writes_of(emulator, "GetJob") > gets, what="the label edit reconciled")
    assert writes_of(emulator, "UpdateJob") == updates


def test_pause_and_resume_follow_spec(sgc: Objects, namespace: str, emulator: Emulator) -> None:
    sgc.create(namespace, sample("pausable"))
    ready(sgc, namespace, "pausable")
    sgc.patch(namespace, "pausable", {"spec": {"paused": True}})
    obj = ready(sgc, namespace, "pausable", reason="Paused")
    assert obj["status"]["state"] == "PAUSED"
    assert condition(obj, "Ready")["status"] == "True"
    job = emulator.scheduler().get_job(name=obj["status"]["jobName"])
    assert job.state == scheduler_v1.Job.State.PAUSED

    sgc.patch(namespace, "pausable", {"spec": {"paused": False}})
    obj = ready(sgc, namespace, "pausable")
    assert obj["status"]["state"] == "ENABLED"
    assert events_of(sgc, namespace, "pausable", "Paused", "Resumed")


def test_run_now_annotation_runs_once_per_value(
    sgc: Objects, namespace: str, emulator: Emulator, target: Target
) -> None:
    path = f"/run-now/{namespace}"
    body = sample("run-now")
    body["spec"]["target"]["uri"] = f"https://{TARGET_HOST}{path}"
    sgc.create(namespace, body)
    ready(sgc, namespace, "run-now")
    runs = writes_of(emulator, "RunJob")

    sgc.patch(namespace, "run-now", {"metadata": {"annotations": {
        "gcpcall.dev/run-requested-at": "2026-11-22T09:58:00Z"}}})
    obj = wait_for(lambda: (o := sgc.get(namespace, "run-now")) and
                   o["status"].get("lastRunRequest") == "2026-11-22T09:58:00Z" and o,
                   what="lastRunRequest echoed")
    assert writes_of(emulator, "RunJob") == runs + 1
    wait_for(lambda: len(target.received(path)) == 1, what="the run reached the target")

    # an unrelated edit does not run it again
    sgc.patch(namespace, "run-now", {"metadata": {"labels": {"x": "y"}}})
    sgc.patch(namespace, "run-now", {"spec": {"description": "still once"}})
    ready(sgc, namespace, "run-now")
    assert writes_of(emulator, "RunJob") == runs + 1

    # a new value runs once more, and the run shows up in status
    sgc.patch(namespace, "run-now", {"metadata": {"annotations": {
        "gcpcall.dev/run-requested-at": "2026-11-22T10:30:00Z"}}})
    wait_for(lambda: writes_of(emulator, "RunJob") == runs + 2, what="second RunJob")
    obj = wait_for(lambda: (o := sgc.get(namespace, "run-now")) and
                   (o["status"].get("runs") or []) and o, what="a run in status")
    assert obj["status"]["lastRun"]["result"] == "Succeeded"
    assert condition(obj, "LastRunSucceeded")["status"] == "True"
    assert obj["status"]["lastRunRequest"] == "2026-11-22T10:30:00Z"


def fire(emulator: Emulator, job: str) -> None:
    emulator.admin("POST", "/scheduler/fire", {"job": job, "wait": True})


def test_scheduled_runs_are_recorded_with_their_result(
    sgc: Objects, namespace: str, emulator: Emulator, target: Target
) -> None:
    path = f"/runs/{namespace}"
    body = sample("runs", historyLimit=2)
    body["spec"]["target"]["uri"] = f"https://{TARGET_HOST}{path}"
    body["spec"]["retry"] = {"retryCount": 0}
    sgc.create(namespace, body)
    job = ready(sgc, namespace, "runs")["status"]["jobName"]

    fire(emulator, job)
    obj = wait_for(lambda: (o := sgc.get(namespace, "runs")) and
                   len(o["status"].get("runs") or []) == 1 and o, what="first run recorded")
    assert obj["status"]["runs"][0]["result"] == "Succeeded"
    assert obj["status"]["runs"][0]["code"] == 0
    assert condition(obj, "LastRunSucceeded")["reason"] == "Succeeded"

    target.answer(path, 403)
    fire(emulator, job)
    obj = wait_for(lambda: (o := sgc.get(namespace, "runs")) and
                   condition(o, "LastRunSucceeded").get("reason") == "TargetError" and o,
                   what="the failed run reported")
    last = obj["status"]["lastRun"]
    assert last["result"] == "Failed"
    assert last["code"] == 7  # PERMISSION_DENIED, as Cloud Scheduler maps HTTP 403
    assert "PERMISSION_DENIED" in condition(obj, "LastRunSucceeded")["message"]
    assert obj["status"]["runs"][0] == last

    fire(emulator, job)
    obj = wait_for(lambda: (o := sgc.get(namespace, "runs")) and
                   o["status"]["lastRun"]["attemptTime"] != last["attemptTime"] and o,
                   what="third run recorded")
    assert len(obj["status"]["runs"]) == 2  # historyLimit
    times = [r["attemptTime"] for r in obj["status"]["runs"]]
    assert times == sorted(times, reverse=True)


def test_history_limit_zero_keeps_no_runs_but_reports_the_last_one(
    sgc: Objects, namespace: str, emulator: Emulator, target: Target
) -> None:
    path = f"/runs0/{namespace}"
    body = sample("runs0", historyLimit=0)
    body["spec"]["target"]["uri"] = f"https://{TARGET_HOST}{path}"
    body["spec"]["retry"] = {"retryCount": 0}
    sgc.create(namespace, body)
    job = ready(sgc, namespace, "runs0")["status"]["jobName"]
    target.answer(path, 403)
    fire(emulator, job)
    obj = wait_for(lambda: (o := sgc.get(namespace, "runs0")) and
                   condition(o, "LastRunSucceeded").get("reason") == "TargetError" and o,
                   what="the failed run reported")
    assert "runs" not in obj["status"]
    assert obj["status"]["lastRun"]["result"] == "Failed"
    fire(emulator, job)  # the target answers 200 again
    obj = wait_for(lambda: (o := sgc.get(namespace, "runs0")) and
                   condition(o, "LastRunSucceeded").get("reason") == "Succeeded" and o,
                   what="the next run reported")
    assert "runs" not in obj["status"]
    assert obj["status"]["lastRun"]["code"] == 0


def test_drift_is_corrected_with_an_event(
    sgc: Objects, namespace: str, emulator: Emulator
) -> None:
    sgc.create(namespace, sample("drifty"))
    name = ready(sgc, namespace, "drifty")["status"]["jobName"]
    client = emulator.scheduler()
    job = client.get_job(name=name)
    job.schedule = "0 0 1 1 *"
    client.update_job(job=job, update_mask={"paths": ["schedule"]})
    wait_for(lambda: client.get_job(name=name).schedule == "5 * * * *",
             what="the schedule restored")
    drift = events_of(sgc, namespace, "drifty", "DriftCorrected")
    assert "schedule" in drift[0]["message"]


def test_delete_removes_job_and_abandon_keeps_it(
    sgc: Objects, namespace: str, emulator: Emulator
) -> None:
    client = emulator.scheduler()
    sgc.create(namespace, sample("doomed"))
    sgc.create(namespace, sample("kept", deletionPolicy="Abandon"))
    doomed = ready(sgc, namespace, "doomed")["status"]["jobName"]
    kept = ready(sgc, namespace, "kept")["status"]["jobName"]
    sgc.delete(namespace, "doomed")
    sgc.delete(namespace, "kept")
    wait_for(lambda: sgc.get(namespace, "doomed") is None, what="doomed gone")
    wait_for(lambda: sgc.get(namespace, "kept") is None, what="kept released")
    jobs = {j.name for j in client.list_jobs(parent=f"projects/{PROJECT}/locations/{LOCATION}")}
    assert doomed not in jobs
    assert kept in jobs
    client.delete_job(name=kept)


def test_refused_delete_blocks_until_abandon(
    sgc: Objects, namespace: str, emulator: Emulator
) -> None:
    sgc.create(namespace, sample("stuck"))
    name = ready(sgc, namespace, "stuck")["status"]["jobName"]
    emulator.fault("DeleteJob", "PERMISSION_DENIED", 1.0)
    try:
        sgc.delete(namespace, "stuck")
        obj = wait_for(lambda: (o := sgc.get(namespace, "stuck")) and
                       condition(o, "Ready").get("reason") == "DeletionBlocked" and o,
                       what="DeletionBlocked")
        assert "gcpcall.dev/finalizer" in obj["metadata"]["finalizers"]
        assert "PERMISSION_DENIED" in condition(obj, "Ready")["message"]
        sgc.patch(namespace, "stuck", {"spec": {"deletionPolicy": "Abandon"}})
        wait_for(lambda: sgc.get(namespace, "stuck") is None, timeout=15,
                 what="released by Abandon")
    finally:
        emulator.clear_faults()
    emulator.scheduler().delete_job(name=name)


def test_without_the_admission_policy_the_operator_adds_its_finalizer(
    sgc: Objects, namespace: str, emulator: Emulator
) -> None:
    """On clusters without admission/finalizer-policy.yaml (before Kubernetes 1.36), the
    operator adds the finalizer itself, beside its first Google write."""
    sgc.create(namespace, sample("late", timeZone="Mars/Olympus_Mons"))
    ready(sgc, namespace, "late", reason="InvalidSpec")
    # as if the policy had not been there: no finalizer, and no job to protect yet
    sgc.patch(namespace, "late", {"metadata": {"finalizers": None}})
    sgc.patch(namespace, "late", {"spec": {"timeZone": "Europe/Berlin"}})
    obj = ready(sgc, namespace, "late")
    assert obj["metadata"]["finalizers"] == ["gcpcall.dev/finalizer"]
    job = obj["status"]["jobName"]
    sgc.delete(namespace, "late")
    wait_for(lambda: sgc.get(namespace, "late") is None, what="late gone")
    parent = job.rsplit("/jobs/", 1)[0]
    assert job not in {j.name for j in emulator.scheduler().list_jobs(parent=parent)}


def test_recreated_object_adopts_its_job_and_foreign_job_is_refused(
    sgc: Objects, namespace: str, emulator: Emulator
) -> None:
    sgc.create(namespace, sample("phoenix", deletionPolicy="Abandon"))
    name = ready(sgc, namespace, "phoenix")["status"]["jobName"]
    sgc.delete(namespace, "phoenix")
    wait_for(lambda: sgc.get(namespace, "phoenix") is None, what="released")
    def created() -> int:
        return len([c for c in emulator.calls("CreateJob") if c["code"] == "OK"])

    creates = created()
    sgc.create(namespace, sample("phoenix"))
    assert ready(sgc, namespace, "phoenix")["status"]["jobName"] == name
    assert created() == creates  # adopted (its CreateJob met ALREADY_EXISTS), not created

    # a job of the same id whose marker names another object is not taken over
    client = emulator.scheduler()
    squatter = job_name(namespace, "squatter")
    job = client.get_job(name=name)
    job.name = squatter
    job.description = "managed-by: gcpcall-operator othercluster/ns/someone"
    client.create_job(parent=f"projects/{PROJECT}/locations/{LOCATION}", job=job)
    sgc.create(namespace, sample("squatter"))
    obj = ready(sgc, namespace, "squatter", reason="AdoptionRefused")
    assert condition(obj, "Ready")["status"] == "False"
    assert "othercluster/ns/someone" in condition(obj, "Ready")["message"]
    assert client.get_job(name=squatter).description.endswith("othercluster/ns/someone")


def test_moving_to_another_location_deletes_the_old_job(
    sgc: Objects, namespace: str, emulator: Emulator
) -> None:
    sgc.create(namespace, sample("mover"))
    old = ready(sgc, namespace, "mover")["status"]["jobName"]
    sgc.patch(namespace, "mover", {"spec": {"location": "europe-west1"}})
    new = wait_for(lambda: (o := sgc.get(namespace, "mover")) and
                   o["status"].get("jobName") != old and o["status"]["jobName"],
                   what="the job moved")
    assert "/locations/europe-west1/" in new
    client = emulator.scheduler()
    assert client.get_job(name=new).schedule == "5 * * * *"
    jobs = {j.name for j in client.list_jobs(parent=f"projects/{PROJECT}/locations/{LOCATION}")}
    assert old not in jobs
