"""Concurrent status writers never lose or roll back each other's fields.

The spec reconcile (Ready, observedGeneration, lastRunRequest) and the batched sync (runs,
LastRunSucceeded, state) write the same objects at the same moments here: 100 objects get
a spec edit and a run-now request in waves, while the sync lists the group after each run
and on its 3-second drift check. A watch records every version of every object's status;
no version may drop a condition, a run, or go back to an older Ready or request.

The operator reaches the API server through a link that holds every request back by
`LATENCY` seconds (`slow_link.py`): on loopback a write is answered in milliseconds, too
fast for two writers' read-then-write windows to meet, and the test would pass on code
that merge-patches `conditions` from a stale base (it did, on the code before status
ownership). Held back, every write stays in flight long enough for the other writers to
compute from the base it is about to replace.
"""

from __future__ import annotations

import datetime
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from kubernetes import client as k8s_client
from kubernetes import watch as k8s_watch
from tests.integration.conftest import (
    TARGET_HOST,
    Emulator,
    Objects,
    Operator,
    Target,
    instead_of,
    own_operator_for,
    wait_for,
)
from tests.integration.slow_link import SlowLink
from tests.integration.test_scheduled_lifecycle import job_name, ready, sample

if TYPE_CHECKING:
    from tests.conftest import ControlPlane

COUNT = 100
WAVES = 4
LATENCY = 0.1  # seconds added to every request from the operator to the API server
RUN_NOW = "gcpcall.dev/run-requested-at"


@pytest.fixture
def own_operator(
    operator: Operator, controlplane: ControlPlane, emulator: Emulator, namespace: str,
    tmp_path: Path,
) -> Iterator[Operator]:
    with SlowLink(controlplane.server, LATENCY) as link:
        kubeconfig = link.kubeconfig(controlplane.kubeconfig, tmp_path / "slow-kubeconfig")
        mine = own_operator_for(controlplane, emulator, tmp_path / "operator.log", namespace,
                                KUBECONFIG=kubeconfig)
        with instead_of(operator, mine):
            yield mine


class History:
    """Every version of every object's status, in the order the API server served them."""

    def __init__(self, k8s: k8s_client.ApiClient, namespace: str) -> None:
        self.api = k8s_client.CustomObjectsApi(k8s)
        self.namespace = namespace
        self.versions: dict[str, list[dict[str, Any]]] = {}
        self._stop = threading.Event()
        self._watch = k8s_watch.Watch()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> History:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._watch.stop()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        version = ""
        while not self._stop.is_set():
            try:
                for event in self._watch.stream(
                    self.api.list_namespaced_custom_object, "gcpcall.dev", "v1alpha1",
                    self.namespace, "scheduledgcpcalls", resource_version=version,
                    timeout_seconds=30, allow_watch_bookmarks=False,
                ):
                    obj = event["object"]
                    version = obj["metadata"]["resourceVersion"]
                    self.versions.setdefault(obj["metadata"]["name"], []).append(
                        {"generation": obj["metadata"].get("generation"),
                         "status": obj.get("status") or {}})
                    if self._stop.is_set():
                        return
            except Exception:
                if self._stop.is_set():
                    return  # stop() closes the stream under the reader
                raise


def rollbacks(versions: list[dict[str, Any]]) -> list[str]:
    """What any version lost of the one before it."""
    found: list[str] = []
    for before, after in itertools.pairwise(versions):
        b, a = before["status"], after["status"]
        b_conds = {c["type"]: c for c in b.get("conditions") or ()}
        a_conds = {c["type"]: c for c in a.get("conditions") or ()}
        if set(b_conds) - set(a_conds):
            found.append(f"conditions lost: {sorted(set(b_conds) - set(a_conds))}")
        b_ready, a_ready = b_conds.get("Ready", {}), a_conds.get("Ready", {})
        if (a_ready.get("observedGeneration") or 0) < (b_ready.get("observedGeneration") or 0):
            found.append(f"Ready went back to generation {a_ready.get('observedGeneration')}")
        b_runs = {r["attemptTime"] for r in b.get("runs") or ()}
        a_runs = {r["attemptTime"] for r in a.get("runs") or ()}
        if b_runs - a_runs:
            found.append(f"runs lost: {sorted(b_runs - a_runs)}")
        if (a.get("lastRunRequest") or "") < (b.get("lastRunRequest") or ""):
            found.append(f"lastRunRequest went back to {a.get('lastRunRequest')}")
        if (a.get("observedGeneration") or 0) < (b.get("observedGeneration") or 0):
            found.append("observedGeneration went back")
    for version in versions:  # LastRunSucceeded always says what runs[0] says
        status = version["status"]
        last = status.get("lastRun")
        cond = {c["type"]: c for c in status.get("conditions") or ()}.get("LastRunSucceeded")
        if last and cond and cond["reason"] != _REASON[last["result"]]:
            found.append(f"LastRunSucceeded {cond['reason']} beside a {last['result']} run")
    return found


_REASON = {"Succeeded": "Succeeded", "Failed": "TargetError"}


def _until(predicate: Callable[[], bool], within: float) -> None:
    """Wait until `predicate` holds or `within` seconds passed, whichever comes first."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and not predicate():
        time.sleep(0.05)


def _last_attempt(emulator: Emulator, job: str) -> str | None:
    attempts = emulator.admin("GET", f"/scheduler/attempts?job={job}")["attempts"]
    if not attempts:
        return None
    when = datetime.datetime.fromisoformat(attempts[-1]["attempt_time"])
    return when.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_spec_edits_run_now_and_sync_lists_at_once_lose_nothing(
    own_operator: Operator, sgc: Objects, namespace: str, emulator: Emulator,
    target: Target, k8s: k8s_client.ApiClient,
) -> None:
    names = [f"race-{i}" for i in range(COUNT)]
    with History(k8s, namespace) as history:
        for name in names:
            body = sample(name, schedule="0 0 1 1 *", historyLimit=50)
            body["spec"]["retry"] = {"retryCount": 0}
            sgc.create(namespace, body)
        for name in names:
            ready(sgc, namespace, name)
        for wave in range(1, WAVES + 1):
            # odd waves fail, even waves succeed: LastRunSucceeded flips every wave
            target.answer(f"/race/{namespace}/wave-{wave}",
                          *([503] * COUNT if wave % 2 else []))
            lists = len(emulator.calls("ListJobs"))
            # The opposite order to the sync's (which walks its members in creation order),
            # so that the reconcile's writes and the sync's cross on the same objects.
            for name in reversed(names):
                sgc.patch(namespace, name, {
                    "metadata": {"annotations": {RUN_NOW: f"wave-{wave:02d}"}},
                    "spec": {"description": f"wave {wave}", "target": {
                        "uri": f"https://{TARGET_HOST}/race/{namespace}/wave-{wave}"}}})
            # Pacing, not a check: the next wave goes out as the sync starts recording this
            # one's runs.
            _until(lambda n=lists: len(emulator.calls("ListJobs")) > n, within=10.0)

        def settled(name: str) -> bool:
            obj = sgc.get(namespace, name) or {}
            status = obj.get("status") or {}
            last = (status.get("lastRun") or {}).get("attemptTime")
            return (status.get("observedGeneration") == obj["metadata"]["generation"]
                    and status.get("lastRunRequest") == f"wave-{WAVES:02d}"
                    and last is not None
                    and last == _last_attempt(emulator, job_name(namespace, name)))

        wait_for(lambda: all(settled(n) for n in names), timeout=120,
                 what="every object settled on the last wave, its last run recorded")
        final = {n: sgc.get(namespace, n) for n in names}
        wait_for(lambda: all(history.versions.get(n) and history.versions[n][-1]["status"]
                             == (final[n] or {}).get("status") for n in names),
                 timeout=30, what="the watch caught up")
    problems = {n: p for n in names if (p := rollbacks(history.versions.get(n, [])))}
    assert problems == {}
    writes = sum(len(v) for v in history.versions.values())
    assert writes > COUNT * WAVES * 2  # the writers really did meet: several versions each
