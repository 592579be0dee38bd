"""Operator restarts: synced objects cost no Google write, run-now requests run once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from tests.integration.conftest import (
    Emulator,
    Objects,
    Operator,
    condition,
    instead_of,
    own_operator_for,
    wait_for,
)
from tests.integration.test_scheduled_lifecycle import ready, sample

if TYPE_CHECKING:
    from kubernetes import client as k8s_client
    from tests.conftest import ControlPlane

RUN_NOW = "gcpcall.dev/run-requested-at"


@pytest.fixture
def running(
    operator: Operator, controlplane: ControlPlane, emulator: Emulator, namespace: str,
    tmp_path: Path,
) -> Iterator[Operator]:
    """An operator of this test's own, watching only its namespace.

    The session operator is stopped meanwhile: two operators must not serve one namespace,
    and objects other tests left behind (some of them not Ready, so reconciled again on
    any restart, by design) must not blur the count of this test's Google calls.
    """
    mine = own_operator_for(controlplane, emulator, tmp_path / "operator.log", namespace)
    with instead_of(operator, mine):
        yield mine


def _settled_after_restart(emulator: Emulator, lists_before: int) -> None:
    """The restarted operator listed the jobs (its resume check) and had time to act."""
    wait_for(lambda: len(emulator.calls("ListJobs")) > lists_before, timeout=60,
             what="a ListJobs by the restarted operator")
    time.sleep(2)


def test_restart_with_synced_objects_makes_no_google_write(
    sgc: Objects, namespace: str, emulator: Emulator, running: Operator
) -> None:
    for i in range(3):
        sgc.create(namespace, sample(f"steady-{i}"))
    for i in range(3):
        ready(sgc, namespace, f"steady-{i}")
    time.sleep(1)
    writes = len(emulator.writes())
    gets = len(emulator.calls("GetJob"))
    lists = len(emulator.calls("ListJobs"))
    running.restart()
    _settled_after_restart(emulator, lists)
    assert len(emulator.writes()) == writes
    assert len(emulator.calls("GetJob")) == gets  # one list per group, not a read per object
    for i in range(3):  # and the restarted sync's status keeps what was there
        obj = ready(sgc, namespace, f"steady-{i}")
        # kopf kept its bookkeeping in memory: nothing of it was written to the object
        annotations = obj["metadata"].get("annotations") or {}
        assert not [a for a in annotations if a.startswith("operator.gcpcall.dev/")]


def test_run_requested_while_down_runs_once_after_restart(
    sgc: Objects, namespace: str, emulator: Emulator, running: Operator
) -> None:
    sgc.create(namespace, sample("run-later"))
    ready(sgc, namespace, "run-later")
    runs = len(emulator.calls("RunJob"))
    sgc.patch(namespace, "run-later", {"metadata": {"annotations": {RUN_NOW: "first"}}})
    wait_for(lambda: (sgc.get(namespace, "run-later") or {}).get("status", {})
             .get("lastRunRequest") == "first", what="first run handled")
    assert len(emulator.calls("RunJob")) == runs + 1

    running.stop()
    sgc.patch(namespace, "run-later", {"metadata": {"annotations": {RUN_NOW: "second"}}})
    lists = len(emulator.calls("ListJobs"))
    running.start()
    wait_for(lambda: (sgc.get(namespace, "run-later") or {}).get("status", {})
             .get("lastRunRequest") == "second", what="second run handled after restart")
    _settled_after_restart(emulator, lists)
    assert len(emulator.calls("RunJob")) == runs + 2

    # and a plain restart does not run it again
    lists = len(emulator.calls("ListJobs"))
    running.restart()
    _settled_after_restart(emulator, lists)
    assert len(emulator.calls("RunJob")) == runs + 2


def test_deletion_requested_while_down_completes_after_restart(
    sgc: Objects, namespace: str, emulator: Emulator, running: Operator
) -> None:
    """Deletion is the operator's own (not kopf's): the restart's initial listing must
    hand a deleting object to it, so the job goes and then the object."""
    sgc.create(namespace, sample("leaving"))
    job = ready(sgc, namespace, "leaving")["status"]["jobName"]
    running.stop()
    sgc.delete(namespace, "leaving")
    held = sgc.get(namespace, "leaving")
    assert held is not None
    assert held["metadata"].get("deletionTimestamp")
    assert held["metadata"]["finalizers"] == ["gcpcall.dev/finalizer"]
    running.start()
    wait_for(lambda: sgc.get(namespace, "leaving") is None, timeout=60,
             what="the object released after the restart")
    parent = job.rsplit("/jobs/", 1)[0]
    assert job not in {j.name for j in emulator.scheduler().list_jobs(parent=parent)}


def test_a_settled_invalid_object_is_reconciled_again_after_a_restart(
    sgc: Objects, namespace: str, k8s: k8s_client.ApiClient, emulator: Emulator,
    running: Operator
) -> None:
    """Objects in sync are registered by the listing event; any other settled one (here
    InvalidSpec from a namespace default fixed while the operator was down) still gets
    the resume handler's reconcile, with kopf's retries."""
    from kubernetes import client as k8s_client

    core = k8s_client.CoreV1Api(k8s)
    core.patch_namespace(namespace, {"metadata": {"annotations": {
        "gcpcall.dev/project": "Not_A_Project"}}})
    sgc.create(namespace, sample("fixed-while-down"))
    invalid = ready(sgc, namespace, "fixed-while-down", reason="InvalidSpec")
    assert "spec.project" in condition(invalid, "Ready")["message"]
    assert not invalid["status"].get("jobName")
    running.stop()
    core.patch_namespace(namespace, {"metadata": {"annotations": {
        "gcpcall.dev/project": "test-project"}}})
    running.start()
    fixed = ready(sgc, namespace, "fixed-while-down")
    assert condition(fixed, "Ready")["status"] == "True"
    job = str(fixed["status"]["jobName"])
    assert job.startswith("projects/test-project/")
    parent = job.rsplit("/jobs/", 1)[0]
    assert job in {j.name for j in emulator.scheduler().list_jobs(parent=parent)}
