"""Google errors injected by the emulator: transient ones retried with backoff, permanent
ones reported and retried slowly."""

from __future__ import annotations

import datetime
import itertools

import pytest
from tests.integration.conftest import Emulator, Objects, condition, wait_for
from tests.integration.test_scheduled_lifecycle import ready, sample

pytestmark = pytest.mark.usefixtures("operator")


def _times(emulator: Emulator, method: str, code: str) -> list[datetime.datetime]:
    return [datetime.datetime.fromisoformat(c["time"]) for c in emulator.calls(method)
            if c["code"] == code]


def test_unavailable_is_retried_with_growing_backoff_until_it_works(
    sgc: Objects, namespace: str, emulator: Emulator
) -> None:
    already = len(_times(emulator, "CreateJob", "UNAVAILABLE"))
    emulator.fault("CreateJob", "UNAVAILABLE", 1.0)
    try:
        sgc.create(namespace, sample("flaky"))
        obj = wait_for(lambda: (o := sgc.get(namespace, "flaky")) and
                       condition(o, "Ready").get("reason") == "GcpError" and o,
                       what="GcpError reported")
        assert "UNAVAILABLE" in condition(obj, "Ready")["message"]
        failures = wait_for(
            lambda: (t := _times(emulator, "CreateJob", "UNAVAILABLE")[already:]) and
            len(t) >= 4 and t, timeout=40, what="four failed attempts")
    finally:
        emulator.clear_faults()
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(failures)]
    # exponential backoff with jitter: the third gap is always longer than the first
    assert gaps[2] > gaps[0]
    obj = ready(sgc, namespace, "flaky")
    assert obj["status"]["jobName"]


def test_permission_denied_is_reported_and_retried_slowly(
    sgc: Objects, namespace: str, emulator: Emulator
) -> None:
    before = len(emulator.calls("CreateJob"))
    emulator.fault("CreateJob", "PERMISSION_DENIED", 1.0)
    try:
        sgc.create(namespace, sample("denied"))
        obj = wait_for(lambda: (o := sgc.get(namespace, "denied")) and
                       condition(o, "Ready").get("reason") == "PermissionDenied" and o,
                       what="PermissionDenied reported")
        assert condition(obj, "Ready")["status"] == "False"
        assert "PERMISSION_DENIED" in condition(obj, "Ready")["message"]
        failed_at = _times(emulator, "CreateJob", "PERMISSION_DENIED")[-1]
        # A fast retry would have come back within about a second; wait until the emulator
        # has served something three seconds later (the sync lists every 3 s here).
        wait_for(lambda: any(datetime.datetime.fromisoformat(c["time"]) - failed_at
                             > datetime.timedelta(seconds=3) for c in emulator.calls()),
                 what="a call three seconds after the refusal")
        assert len(emulator.calls("CreateJob")) == before + 1
    finally:
        emulator.clear_faults()
        sgc.delete(namespace, "denied")
    wait_for(lambda: sgc.get(namespace, "denied") is None, what="deleted")


def test_drift_that_cannot_be_put_back_is_reported_until_it_can(
    sgc: Objects, namespace: str, emulator: Emulator
) -> None:
    """A job edited outside the operator while UpdateJob is refused: Ready=False with the
    classified reason, naming the field that differs; once allowed, UpToDate again."""
    sgc.create(namespace, sample("drift-denied"))
    name = ready(sgc, namespace, "drift-denied")["status"]["jobName"]
    client = emulator.scheduler()
    job = client.get_job(name=name)
    job.http_target.uri = "https://target.googleapis.com/somewhere-else"
    client.update_job(job=job, update_mask={"paths": ["http_target.uri"]})
    emulator.fault("UpdateJob", "PERMISSION_DENIED", 1.0)
    try:
        obj = wait_for(lambda: (o := sgc.get(namespace, "drift-denied")) and
                       condition(o, "Ready").get("reason") == "PermissionDenied" and o,
                       timeout=30, what="Ready=False/PermissionDenied from the drift check")
        ready_cond = condition(obj, "Ready")
        assert ready_cond["status"] == "False"
        assert "http_target.uri" in ready_cond["message"]
        assert "PERMISSION_DENIED" in ready_cond["message"]
        assert client.get_job(name=name).http_target.uri.endswith("/somewhere-else")
    finally:
        emulator.clear_faults()
    ready(sgc, namespace, "drift-denied")
    assert "/somewhere-else" not in client.get_job(name=name).http_target.uri


def test_a_slow_create_shows_creating_then_up_to_date(
    sgc: Objects, namespace: str, emulator: Emulator
) -> None:
    """api.md's `Creating`: written only when the Google write is slow enough to be seen
    (here CreateJob takes 8 s), then replaced by UpToDate."""
    emulator.slow("CreateJob", 8)
    try:
        sgc.create(namespace, sample("slow"))
        obj = wait_for(lambda: (o := sgc.get(namespace, "slow")) and
                       condition(o, "Ready").get("reason") == "Creating" and o,
                       what="Ready=False/Creating while CreateJob is slow")
        assert condition(obj, "Ready")["status"] == "False"
        assert "jobName" not in obj["status"]
    finally:
        emulator.clear_faults()
    assert ready(sgc, namespace, "slow")["status"]["jobName"]


def test_a_slow_update_shows_updating(sgc: Objects, namespace: str, emulator: Emulator) -> None:
    sgc.create(namespace, sample("slow-edit"))
    ready(sgc, namespace, "slow-edit")
    emulator.slow("UpdateJob", 8)
    try:
        sgc.patch(namespace, "slow-edit", {"spec": {"schedule": "7 * * * *"}})
        wait_for(lambda: condition(sgc.get(namespace, "slow-edit"), "Ready").get("reason")
                 == "Updating", what="Ready=False/Updating while UpdateJob is slow")
    finally:
        emulator.clear_faults()
    obj = wait_for(lambda: (o := sgc.get(namespace, "slow-edit")) and
                   o["status"].get("observedGeneration") == o["metadata"]["generation"] and
                   condition(o, "Ready").get("reason") == "UpToDate" and o,
                   what="the edit applied")
    assert emulator.scheduler().get_job(name=obj["status"]["jobName"]).schedule == "7 * * * *"


def test_a_delete_google_cannot_take_now_shows_deleting_and_finishes_later(
    sgc: Objects, namespace: str, emulator: Emulator
) -> None:
    """`Deleting` (retrying by itself), not `DeletionBlocked` (a person must act), while
    DeleteJob answers UNAVAILABLE; the job goes once Google answers again."""
    sgc.create(namespace, sample("going"))
    name = ready(sgc, namespace, "going")["status"]["jobName"]
    emulator.fault("DeleteJob", "UNAVAILABLE", 1.0)
    try:
        sgc.delete(namespace, "going")
        obj = wait_for(lambda: (o := sgc.get(namespace, "going")) and
                       condition(o, "Ready").get("reason") == "Deleting" and o,
                       what="Ready=False/Deleting")
        assert "UNAVAILABLE" in condition(obj, "Ready")["message"]
        assert "gcpcall.dev/finalizer" in obj["metadata"]["finalizers"]
    finally:
        emulator.clear_faults()
    wait_for(lambda: sgc.get(namespace, "going") is None, timeout=60, what="deleted")
    assert not [j for j in emulator.scheduler().list_jobs(parent=name.rsplit("/jobs/", 1)[0])
                if j.name == name]
