"""A relay-enabled install of the chart on the e2e API server, and the relay running as the
chart renders its Deployment (`gcpcall-operator relay`, the relay pods' environment) with
the token of the chart's ServiceAccount: the operator's ClusterRole is enough for it to admit
a request (read the object, its namespace and ServiceAccount, mint the identity's token) and
to record the run in status.

A release of its own (relay-e2e, in its own namespace, with its own ClusterRole) beside the
default install of conftest.py, which brings the CRDs. As there, the Deployments are checked
by a server-side dry run (no kubelet) and the relay runs here as a process.
"""

from __future__ import annotations

import copy
import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s_client
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ControlPlane, service_account_token
from tests.e2e.conftest import (
    CLUSTER_URL,
    DEFAULT_KSA,
    E2E_VALUES,
    POOL,
    TARGET_HOSTS,
    Helm,
    Install,
    bind_workload_identity,
    gsa,
    kubectl_apply,
    of_kind,
    sample_call,
    write_kubeconfig,
)
from tests.integration.conftest import (
    Emulator,
    Objects,
    Target,
    _stop,
    condition,
    operator_env,
    wait_for,
)

RELEASE = "relay-e2e"
NAMESPACE = "relay-e2e"
FULL_NAME = f"{RELEASE}-gcpcall-operator"
RELAY_URL = "https://relay.e2e.test/relay/v1"
VALUES: dict[str, Any] = {
    **copy.deepcopy(E2E_VALUES),
    # the default install owns the CRDs and the finalizer policy
    "crds": {"enabled": False},
    "finalizerPolicy": {"enabled": False},
    "relay": {"enabled": True, "url": RELAY_URL,
              "deployment": {"enabled": True, "replicas": 2},
              "ingress": {"enabled": True,
                          "annotations": {"networking.gke.io/managed-certificates": "relay"}}},
    "networkPolicy": {"enabled": True},
    "metrics": {"dashboard": {"enabled": True}},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RelayInstall:
    docs: list[dict[str, Any]]
    kubeconfig: Path  # the chart's ServiceAccount

    def deployment(self, name: str) -> dict[str, Any]:
        (found,) = [d for d in of_kind(self.docs, "Deployment") if d["metadata"]["name"] == name]
        return found

    def relay_container(self) -> dict[str, Any]:
        return dict(self.deployment(f"{FULL_NAME}-relay")["spec"]["template"]["spec"][
            "containers"][0])


@pytest.fixture(scope="module")
def relay_install(
    helm: Helm, install: Install, e2e_controlplane: ControlPlane, e2e_k8s: k8s_client.ApiClient
) -> RelayInstall:
    """The relay-enabled chart applied, as `helm install` would (`install`: the CRDs)."""
    cp = e2e_controlplane
    docs = helm.template(VALUES, release=RELEASE, namespace=NAMESPACE)
    deployments = of_kind(docs, "Deployment")
    rest = [d for d in docs if d["kind"] != "Deployment"]
    cp.kubectl("create", "namespace", NAMESPACE)
    kubectl_apply(cp, rest)
    out = kubectl_apply(cp, deployments, "--dry-run=server", "--validate=strict")
    assert out.count("serverside-applied (server dry run)") == 2, out
    token = service_account_token(e2e_k8s, NAMESPACE, FULL_NAME)
    return RelayInstall(docs, write_kubeconfig(cp.workdir / "relay.kubeconfig", cp, token))


def test_the_relay_release_is_installed(relay_install: RelayInstall,
                                        e2e_controlplane: ControlPlane) -> None:
    names = {(d["kind"], d["metadata"]["name"]) for d in relay_install.docs}
    assert {("Deployment", FULL_NAME), ("Deployment", f"{FULL_NAME}-relay"),
            ("Service", f"{FULL_NAME}-relay"), ("Service", f"{FULL_NAME}-relay-metrics"),
            ("PodDisruptionBudget", f"{FULL_NAME}-relay"), ("Ingress", f"{FULL_NAME}-relay"),
            ("NetworkPolicy", f"{FULL_NAME}-relay"),
            ("ConfigMap", f"{FULL_NAME}-dashboard")} <= names
    got = e2e_controlplane.kubectl(
        "-n", NAMESPACE, "get", "service,poddisruptionbudget,networkpolicy,ingress,configmap",
        "-l", f"app.kubernetes.io/instance={RELEASE}", "-o", "name").stdout.split()
    assert f"service/{FULL_NAME}-relay" in got
    assert f"poddisruptionbudget.policy/{FULL_NAME}-relay" in got
    assert f"ingress.networking.k8s.io/{FULL_NAME}-relay" in got


# --- the relay, running as the chart's ServiceAccount -----------------------------------------


@dataclass
class RunningRelay:
    port: int
    metrics_port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str, port: int | None = None) -> tuple[int, bytes]:
        url = f"http://127.0.0.1:{port or self.port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return resp.status, bytes(resp.read())
        except urllib.error.HTTPError as e:
            return e.code, bytes(e.read())

    def post(self, body: bytes, token: str | None) -> tuple[int, dict[str, Any]]:
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/relay/v1", data=body,
                                     headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")


@pytest.fixture(scope="module")
def relay(
    relay_install: RelayInstall, e2e_controlplane: ControlPlane, e2e_emulator: Emulator,
    recorder: Target, tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningRelay]:
    cp, emu = e2e_controlplane, e2e_emulator
    c = relay_install.relay_container()
    assert c["command"] == ["gcpcall-operator"]
    assert c["args"][0] == "relay"
    # what a team's namespace identity needs: the cluster's Workload Identity trust
    emu.admin("POST", "/sts/trusts", {
        "audience": f"identitynamespace:{POOL}:{CLUSTER_URL}", "issuer": cp.issuer,
        "pool": POOL, "caPem": Path(cp.ca_file).read_text()})
    port, metrics_port = _free_port(), _free_port()
    # the relay pods' environment, then what differs here: the emulator for Google, the
    # chart's ServiceAccount token for Kubernetes, loopback ports
    env = operator_env(cp, emu, **{e["name"]: str(e["value"]) for e in c["env"]})
    env.update(
        KUBECONFIG=str(relay_install.kubeconfig),
        GCPCALL_STS_ENDPOINT=f"{emu.http_url}/v1/token",
        GCPCALL_IAM_CREDENTIALS_ENDPOINT=emu.http_url,
        GCPCALL_HOST_MAP=",".join(f"{h}=http://127.0.0.1:{recorder.port}" for h in TARGET_HOSTS),
        GCPCALL_RELAY_PORT=str(port),
        GCPCALL_RELAY_ADDRESS="127.0.0.1",
    )
    args = [a for a in c["args"][1:] if not a.startswith("--metrics-port=")]
    log_path = tmp_path_factory.mktemp("relay") / "relay.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gcpcall", "relay", f"--metrics-port={metrics_port}", *args],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    running = RunningRelay(port, metrics_port, proc, log_path)

    def healthy() -> bool:
        assert proc.poll() is None, f"the relay exited:\n{running.log()[-4000:]}"
        try:
            return running.get("/healthz")[0] == 200
        except OSError:
            return False

    try:
        wait_for(healthy, timeout=60, what="the relay's /healthz")
        yield running
    finally:
        _stop(proc)


def relayed_call(name: str, path: str) -> dict[str, Any]:
    body = sample_call(name, {"json": {"size": 4}}, delivery="Relay", schedule="0 0 1 1 *")
    body["spec"]["target"]["uri"] = f"https://target.googleapis.com{path}"
    return body


def envelope(obj: dict[str, Any]) -> bytes:
    meta = obj["metadata"]
    return json.dumps({"apiVersion": "gcpcall.dev/v1alpha1", "kind": obj["kind"],
                       "namespace": meta["namespace"], "name": meta["name"],
                       "uid": meta["uid"]}).encode()


def id_token(emulator: Emulator, email: str) -> str:
    """An ID token as Google signs it for Cloud Scheduler's call, audience the relay URL."""
    return str(emulator.admin("POST", "/tokens/id",
                              {"email": email, "audience": RELAY_URL})["token"])


def test_the_relay_runs_a_call_as_the_chart_s_service_account(
    relay: RunningRelay, e2e_k8s: k8s_client.ApiClient, e2e_emulator: Emulator,
    e2e_sgc: Objects, recorder: Target, e2e_namespace: str,
) -> None:
    ns, path = e2e_namespace, f"/e2e/{e2e_namespace}/relayed"
    bind_workload_identity(e2e_k8s, e2e_emulator, ns, DEFAULT_KSA, gsa("runner"))
    obj = e2e_sgc.create(ns, relayed_call("relayed", path))

    # no token, or another account's: refused, no call made
    assert relay.post(envelope(obj), None) == (401, {"error": "missing"})
    status, answer = relay.post(envelope(obj), id_token(e2e_emulator, gsa("intruder")))
    assert (status, answer) == (403, {"error": "email"}), relay.log()[-4000:]
    assert not recorder.received(path)

    # the object's own identity's token: the call, as the object, and its run in status
    status, answer = relay.post(envelope(obj), id_token(e2e_emulator, gsa("runner")))
    assert status == 200, (answer, relay.log()[-4000:])
    got = recorder.received(path)
    assert len(got) == 1
    assert got[0].body == b'{"size":4}'
    assert got[0].headers["Authorization"].startswith("Bearer ")

    def recorded() -> dict[str, Any] | None:
        run = ((e2e_sgc.get(ns, "relayed") or {}).get("status") or {}).get("lastRun")
        return run if run and run.get("result") else None

    run = wait_for(recorded, timeout=60, what="the run in status")
    assert (run["result"], run["httpStatus"]) == ("Succeeded", 200), run
    assert condition(e2e_sgc.get(ns, "relayed"), "LastRunSucceeded")["status"] == "True"

    log = relay.log()
    for sign in ("Not enough permissions", "403 Forbidden", "forbidden"):
        assert sign not in log, f"{sign!r} in the relay's log:\n{log[-4000:]}"


def test_the_relay_serves_health_and_metrics(relay: RunningRelay) -> None:
    assert relay.get("/healthz") == (200, b'{"ok": true}')
    assert relay.post(b"{}", None)[0] == 401
    status, text = relay.get("/metrics", port=relay.metrics_port)
    assert status == 200
    refusals = {
        (s.labels["status"], s.labels["reason"]): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
        if s.name == "gcpcall_relay_refusals_total"
    }
    assert refusals.get(("401", "missing"), 0) >= 1, refusals
