"""R7 (targets.md): two replicas with leader election; the leader SIGKILLed, then stopped.

Only the Lease holder acts: while one replica leads the other makes no Google call, so every
job is created once (the emulator's call log is the witness: one CreateJob per object, no
ALREADY_EXISTS, no update of an unchanged job). When the leader is killed, the standby takes
the Lease once it expires and handles a new object; when a leader is stopped with SIGTERM it
releases the Lease, so the standby leads at its next retry instead of after the lease
duration. Both replicas run with `--namespace` on the shared control plane while the
session's operator is stopped.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s_client

from tests.conftest import ControlPlane
from tests.integration.conftest import (
    Emulator,
    Objects,
    Operator,
    condition,
    instead_of,
    own_operator_for,
    wait_for,
)
from tests.integration.test_scheduled_lifecycle import sample

LEASE = "r7-leader"
# A short lease keeps the test quick; the defaults (15/10/2 s) are the same protocol.
DURATION, RENEW, RETRY = "6", "4", "1"


@pytest.fixture
def replicas(
    operator: Operator, controlplane: ControlPlane, emulator: Emulator, namespace: str,
    tmp_path: Path,
) -> Iterator[dict[str, Operator]]:
    made = {name: own_operator_for(
        controlplane, emulator, tmp_path / f"operator-{name}.log", namespace,
        HOSTNAME=f"r7-{name}", GCPCALL_LEADER_ELECTION="true", GCPCALL_LEASE_NAME=LEASE,
        GCPCALL_LEASE_NAMESPACE=namespace, GCPCALL_LEASE_DURATION_SECONDS=DURATION,
        GCPCALL_LEASE_RENEW_SECONDS=RENEW, GCPCALL_LEASE_RETRY_SECONDS=RETRY)
        for name in ("a", "b")}
    with instead_of(operator, *made.values(), start=False):
        yield made


def _holder(k8s: k8s_client.ApiClient, namespace: str) -> str:
    try:
        lease = k8s_client.CoordinationV1Api(k8s).read_namespaced_lease(LEASE, namespace)
    except k8s_client.ApiException as e:
        if e.status == 404:
            return ""
        raise
    return str(lease.spec.holder_identity or "")


def _leads(k8s: k8s_client.ApiClient, namespace: str, replica: str) -> None:
    wait_for(lambda: _holder(k8s, namespace).startswith(f"r7-{replica}_"), timeout=60,
             what=f"replica {replica} holds the lease")


def _ready(sgc: Objects, namespace: str, names: list[str]) -> None:
    def all_ready() -> bool:
        return all(condition(sgc.get(namespace, n), "Ready").get("reason") == "UpToDate"
                   for n in names)

    wait_for(all_ready, timeout=120, what=f"{len(names)} objects Ready")


def _writes(emulator: Emulator, since: int) -> list[dict[str, Any]]:
    return [c for c in emulator.calls()[since:]
            if c["service"].endswith("CloudScheduler")
            and not c["method"].startswith(("Get", "List"))]


def test_r7_the_standby_leads_after_the_leader_dies_and_no_write_is_made_twice(
    replicas: dict[str, Operator], k8s: k8s_client.ApiClient, sgc: Objects,
    namespace: str, emulator: Emulator,
) -> None:
    since = len(emulator.calls())
    replicas["a"].start()
    _leads(k8s, namespace, "a")
    replicas["b"].start()
    wait_for(lambda: "waiting for the lease" in replicas["b"].log(), timeout=60,
             what="replica b standing by")
    first = [f"r7-{i}" for i in range(20)]
    for name in first:
        sgc.create(namespace, sample(name))
    _ready(sgc, namespace, first)
    assert "this replica leads" not in replicas["b"].log()

    replicas["a"].kill()  # SIGKILL: no release, the standby waits the lease out
    _leads(k8s, namespace, "b")
    sgc.create(namespace, sample("r7-after-kill"))
    _ready(sgc, namespace, [*first, "r7-after-kill"])

    replicas["a"].start()  # back as a standby
    wait_for(lambda: replicas["a"].log().count("waiting for the lease") >= 2, timeout=60,
             what="replica a standing by again")
    replicas["b"].stop()  # SIGTERM: the lease is released on the way out
    assert "released the lease" in replicas["b"].log()
    _leads(k8s, namespace, "a")
    sgc.create(namespace, sample("r7-after-stop"))
    _ready(sgc, namespace, [*first, "r7-after-kill", "r7-after-stop"])

    writes = _writes(emulator, since)
    created = [c for c in writes if c["method"] == "CreateJob"]
    # each object's job created once, by whichever replica led; nothing else written
    assert len(created) == len(first) + 2, writes
    assert all(c["code"] == "OK" for c in created), created
    assert [c for c in writes if c["method"] != "CreateJob"] == []
