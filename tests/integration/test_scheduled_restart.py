"""Operator restarts: synced objects cost no Google write, run-now requests run once."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from tests.integration.conftest import Emulator, Objects, Operator, condition, wait_for
from tests.integration.test_scheduled_lifecycle import ready, sample

RUN_NOW = "gcpcall.dev/run-requested-at"


@pytest.fixture
def running(operator: Operator) -> Iterator[Operator]:
    yield operator
    if operator.proc is None or operator.proc.poll() is not None:
        operator.start()


def _settled_after_restart(emulator: Emulator, lists_before: int) -> None:
    """The restarted operator listed the jobs (its resume check) and had time to act."""
    wait_for(lambda: len(emulator.calls("ListJobs")) > lists_before, timeout=60,
             what="a ListJobs by the restarted operator")
    time.sleep(2)


def _delete_unsynced(sgc: Objects) -> None:
    """Objects other tests left not Ready (e.g. a refused adoption) are reconciled again on
    a restart, by design; this test is about synced objects, so it removes those first."""
    items = sgc.api.list_cluster_custom_object("gcpcall.dev", "v1alpha1", sgc.plural)["items"]
    left = [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in items
            if condition(o, "Ready").get("status") != "True"]
    for ns, name in left:
        sgc.delete(ns, name)
    wait_for(lambda: all(sgc.get(ns, name) is None for ns, name in left), timeout=60,
             what=f"unsynced objects deleted: {left}")


def test_restart_with_synced_objects_makes_no_google_write(
    sgc: Objects, namespace: str, emulator: Emulator, running: Operator
) -> None:
    _delete_unsynced(sgc)
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
