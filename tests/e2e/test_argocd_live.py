"""The Argo CD scripts on live objects: the health the operator's real statuses give, and the
run-now action applied as Argo CD applies it, through to a run of the Cloud Scheduler job.

Why: the unit tests feed the scripts sample statuses; this proves the samples match what the
operator really writes, and that the action's annotation makes the operator run the job.
"""

from __future__ import annotations

from typing import Any

from kubernetes import client as k8s_client

from tests.e2e.argocd_lua import ArgoLua, script
from tests.e2e.conftest import (
    DEFAULT_KSA,
    bind_workload_identity,
    gsa,
    ready,
    sample_call,
)
from tests.integration.conftest import (
    Emulator,
    Objects,
    Operator,
    Target,
    condition,
    wait_for,
)

HEALTH = script("health-ScheduledGcpCall.lua")
RUN_NOW = script("action-run-now-ScheduledGcpCall.lua")
DISCOVERY = script("action-discovery-ScheduledGcpCall.lua")


def health_of(sgc: Objects, namespace: str, name: str) -> tuple[str, str]:
    obj = sgc.get(namespace, name)
    assert obj is not None
    return ArgoLua().health(HEALTH, obj)


def wait_health(sgc: Objects, namespace: str, name: str, want: str) -> str:
    def check() -> str | None:
        status, message = health_of(sgc, namespace, name)
        return message if status == want else None

    return str(wait_for(check, timeout=60, what=f"Argo CD health {want}"))


def test_health_and_run_now_on_a_live_scheduled_call(
    e2e_operator: Operator,
    e2e_k8s: k8s_client.ApiClient,
    e2e_emulator: Emulator,
    e2e_sgc: Objects,
    recorder: Target,
    e2e_namespace: str,
) -> None:
    ns, name = e2e_namespace, "nightly"
    bind_workload_identity(e2e_k8s, e2e_emulator, ns, DEFAULT_KSA, gsa("runner"))
    e2e_sgc.create(ns, sample_call(name, {"json": {"size": 4}}))
    obj = ready(e2e_sgc, ns, name, e2e_operator)
    assert condition(obj, "LastRunSucceeded")["reason"] == "NoRunYet"
    assert ArgoLua().health(HEALTH, obj) == ("Healthy", obj["status"]["jobName"])

    # the action, as Argo CD runs it: discovery offers it, action.lua returns the new object,
    # Argo CD patches the live object with the difference (here: one annotation)
    assert ArgoLua().run(DISCOVERY, obj) == {"run-now": {"disabled": False}}
    changed: dict[str, Any] = ArgoLua().run(RUN_NOW, obj)
    stamp = changed["metadata"]["annotations"]["gcpcall.dev/run-requested-at"]
    assert changed["spec"] == obj["spec"]
    runs_before = len(e2e_emulator.calls("RunJob"))
    e2e_sgc.patch(ns, name, {"metadata": {"annotations": changed["metadata"]["annotations"]}})

    def echoed() -> dict[str, Any] | None:
        live = e2e_sgc.get(ns, name)
        return live if (live or {}).get("status", {}).get("lastRunRequest") == stamp else None

    wait_for(echoed, timeout=60, what="status.lastRunRequest echoes the action's value")
    assert len(e2e_emulator.calls("RunJob")) == runs_before + 1
    wait_for(
        lambda: any("/instanceGroupManagers/ig/resize" in p for p in recorder.paths()),
        timeout=60,
        what="the run reached the target",
    )

    def succeeded() -> dict[str, Any] | None:
        live = e2e_sgc.get(ns, name)
        return live if condition(live, "LastRunSucceeded").get("status") == "True" else None

    live = wait_for(succeeded, timeout=60, what="LastRunSucceeded=True")
    assert ArgoLua().health(HEALTH, live)[0] == "Healthy"

    # paused: Suspended; then a spec the operator refuses: Degraded, naming the field
    e2e_sgc.patch(ns, name, {"spec": {"paused": True}})
    wait_health(e2e_sgc, ns, name, "Suspended")
    e2e_sgc.patch(ns, name, {"spec": {"paused": False, "timeZone": "Mars/Olympus_Mons"}})
    message = wait_health(e2e_sgc, ns, name, "Degraded")
    assert "InvalidSpec" in message
    assert "timeZone" in message
