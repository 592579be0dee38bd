"""e2e fixtures: the Helm chart rendered and installed on a real API server with RBAC on, and
the operator process running as the chart's ServiceAccount, in the WorkloadIdentity mode.

Why its own API server and emulator: the integration suite keeps a cluster-wide operator
running on the shared server for the whole session, and a second cluster-wide operator
there would handle the same objects. The e2e server starts empty, so the chart installs the
CRDs itself, as it does on a real cluster.

How the operator runs "as the chart": `helm template` renders the chart; everything but the
Deployment is applied (the Deployment is validated by a server-side dry run: there is no
kubelet to run it). The operator then runs here as a process with the Deployment's
environment, authenticated with a TokenRequest token of the chart's ServiceAccount, so every
API call it makes is authorized by the chart's ClusterRole and nothing else.

The helm binary is built by `make tools` into .bin/; without it the e2e tests fail.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from tests.conftest import (
    BIN,
    REPO,
    ControlPlane,
    ensure_service_account,
    running_controlplane,
    service_account_token,
    wait_finalizer_policy,
)
from tests.integration.conftest import (
    Emulator,
    Objects,
    Operator,
    Target,
    _start_emulator,
    _stop,
    condition,
    operator_env,
    serve_target,
    wait_for,
)

HELM = BIN / "helm"
CHART = REPO / "helm" / "gcpcall-operator"
RELEASE = "gcpcall-operator"  # the chart's full name is then "gcpcall-operator"
OPERATOR_NS = "gcpcall-system"
OPERATOR_SA = RELEASE
SA_USER = f"system:serviceaccount:{OPERATOR_NS}:{OPERATOR_SA}"
CLUSTER = "e2e"
PROJECT = "e2e-project"
LOCATION = "europe-west1"
POOL = f"{PROJECT}.svc.id.goog"
CLUSTER_URL = (
    f"https://container.googleapis.com/v1/projects/{PROJECT}/locations/{LOCATION}/clusters/e2e"
)
DEFAULT_KSA = "gcpcall-runner"  # identity.defaultServiceAccountName
# target hosts the emulator routes to the local recorder instead of the internet
TARGET_HOSTS = ("target.googleapis.com", "compute.googleapis.com", "dataflow.googleapis.com")

E2E_VALUES: dict[str, Any] = {
    "clusterName": CLUSTER,
    "gcp": {"project": PROJECT, "location": LOCATION},
    "identity": {
        "mode": "WorkloadIdentity",
        "workloadPool": POOL,
        "clusterUrl": CLUSTER_URL,
        "defaultServiceAccountName": DEFAULT_KSA,
    },
}

# The chart's HA mode, as the e2e suite installs it: two replicas elect a leader on a Lease.
HA_VALUES: dict[str, Any] = {**E2E_VALUES, "replicaCount": 2}


# --- helm ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Helm:
    """The helm binary of `make tools`, run on the chart of this repository."""

    path: Path

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(self.path), *args], capture_output=True, text=True, timeout=120, check=False
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}"
            )
        return proc

    def _with_values(self, values: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="values-") as f:
            yaml.safe_dump(values, f)
            f.flush()
            return self.run(*args, "--values", f.name, check=False)

    def render(
        self, values: dict[str, Any], *, release: str = RELEASE, namespace: str = OPERATOR_NS
    ) -> subprocess.CompletedProcess[str]:
        """`helm template`, unchecked (for tests of refused values)."""
        return self._with_values(values, "template", release, str(CHART), "-n", namespace)

    def template(
        self, values: dict[str, Any], *, release: str = RELEASE, namespace: str = OPERATOR_NS
    ) -> list[dict[str, Any]]:
        """The rendered documents (hooks included), as parsed YAML."""
        proc = self.render(values, release=release, namespace=namespace)
        if proc.returncode != 0:
            raise AssertionError(f"helm template failed:\n{proc.stderr}")
        return [d for d in yaml.safe_load_all(proc.stdout) if d]

    def lint(self, values: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
        return self._with_values(values or {}, "lint", "--strict", str(CHART))


@pytest.fixture(scope="session")
def helm() -> Helm:
    if not HELM.exists():
        pytest.fail(
            f"{HELM.relative_to(REPO)} is missing: run `make tools` (it builds helm)",
            pytrace=False,
        )
    return Helm(HELM)


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d.get("kind") == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = of_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def container_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    """The operator container's environment in the rendered Deployment."""
    container = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: str(e["value"]) for e in container.get("env", [])}


# --- the e2e API server and emulator -------------------------------------------------------


@pytest.fixture(scope="session")
def e2e_controlplane(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[ControlPlane]:
    """An API server of the e2e suite's own: the chart installs the CRDs itself."""
    with running_controlplane(
        tmp_path_factory.mktemp("e2e-controlplane"), request, apply_crds=False
    ) as cp:
        yield cp


@pytest.fixture(scope="session")
def e2e_k8s(e2e_controlplane: ControlPlane) -> k8s_client.ApiClient:
    """An admin client of the e2e server."""
    return k8s_config.new_client_from_config(config_file=e2e_controlplane.kubeconfig)


@pytest.fixture(scope="session")
def e2e_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    emu = _start_emulator(tmp_path_factory.mktemp("e2e-emulator") / "emulator.log")
    try:
        yield emu
    finally:
        _stop(emu.proc)


@pytest.fixture(scope="session")
def recorder(e2e_emulator: Emulator) -> Iterator[Target]:
    """The targets' stand-in: answers 200 and records each request."""
    with serve_target(e2e_emulator, TARGET_HOSTS) as state:
        yield state


# --- the chart, installed ------------------------------------------------------------------


@dataclass(frozen=True)
class Install:
    docs: list[dict[str, Any]]  # everything `helm template` rendered
    cluster_role: dict[str, Any]
    env: dict[str, str]  # the Deployment's container environment
    kubeconfig: Path  # authenticates as the chart's ServiceAccount


def kubectl_apply(cp: ControlPlane, docs: list[dict[str, Any]], *flags: str) -> str:
    text = yaml.safe_dump_all(docs)
    return cp.kubectl(
        "apply", "--server-side", "--field-manager=helm", *flags, "-f", "-", input=text
    ).stdout


def write_kubeconfig(path: Path, cp: ControlPlane, token: str) -> Path:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "e2e", "cluster": {"server": cp.server, "certificate-authority": cp.ca_file}}
        ],
        "users": [{"name": OPERATOR_SA, "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "e2e", "user": OPERATOR_SA}}],
        "current-context": "operator",
    }
    path.write_text(yaml.safe_dump(doc))
    path.chmod(0o600)
    return path


@pytest.fixture(scope="session")
def install(helm: Helm, e2e_controlplane: ControlPlane, e2e_k8s: k8s_client.ApiClient) -> Install:
    """The chart with E2E_VALUES in its HA mode (two replicas, leader election) on the e2e
    server, as `helm install` would put it there."""
    cp = e2e_controlplane
    docs = helm.template(HA_VALUES)
    deployment = one(docs, "Deployment")
    rest = [d for d in docs if d is not deployment]
    cp.kubectl("create", "namespace", OPERATOR_NS)
    kubectl_apply(cp, rest)
    kubectl_apply(cp, [deployment], "--dry-run=server")
    cp.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
    wait_finalizer_policy(cp)
    token = service_account_token(e2e_k8s, OPERATOR_NS, OPERATOR_SA)
    kubeconfig = write_kubeconfig(cp.workdir / "operator.kubeconfig", cp, token)
    return Install(docs, one(docs, "ClusterRole"), container_env(docs), kubeconfig)


@pytest.fixture(scope="session")
def e2e_replicas(
    install: Install,
    e2e_controlplane: ControlPlane,
    e2e_emulator: Emulator,
    recorder: Target,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Operator, Operator]]:
    """The operator with the chart's settings, as the chart's ServiceAccount: the leader
    and the standby replica."""
    cp, emu = e2e_controlplane, e2e_emulator
    ca_pem = Path(cp.ca_file).read_text()
    emu.admin(
        "POST",
        "/sts/trusts",
        {
            "audience": f"identitynamespace:{POOL}:{CLUSTER_URL}",
            "issuer": cp.issuer,
            "pool": POOL,
            "caPem": ca_pem,
        },
    )
    env = operator_env(
        cp,
        emu,
        **install.env,
        KUBECONFIG=str(install.kubeconfig),
        GCPCALL_STS_ENDPOINT=f"{emu.http_url}/v1/token",
        GCPCALL_IAM_CREDENTIALS_ENDPOINT=emu.http_url,
    )
    # The chart's two replicas: this one leads (it starts first and takes the Lease); the
    # other stands by beside it, under the same RBAC, for the whole e2e suite.
    workdir = tmp_path_factory.mktemp("e2e-operator")
    op = Operator({**env, "HOSTNAME": "e2e-operator-0"}, workdir / "operator.log")
    standby = Operator({**env, "HOSTNAME": "e2e-operator-1"}, workdir / "standby.log")
    op.start()
    try:
        wait_for(lambda: "this replica leads" in op.log(), timeout=60,
                 what="the first replica leads")
        standby.start()
        wait_for(lambda: "waiting for the lease" in standby.log(), timeout=60,
                 what="the second replica stands by")
        yield op, standby
    finally:
        standby.stop()
        op.stop()


@pytest.fixture(scope="session")
def e2e_operator(e2e_replicas: tuple[Operator, Operator]) -> Operator:
    """The replica that leads."""
    return e2e_replicas[0]


# --- per test ------------------------------------------------------------------------------


@pytest.fixture
def e2e_namespace(e2e_k8s: k8s_client.ApiClient, request: pytest.FixtureRequest) -> str:
    base = request.node.name.lower()
    cleaned = "".join(c if c.isalnum() else "-" for c in base)[:40].strip("-") or "t"
    name = f"{cleaned}-{uuid.uuid4().hex[:6]}"
    k8s_client.CoreV1Api(e2e_k8s).create_namespace(
        k8s_client.V1Namespace(metadata=k8s_client.V1ObjectMeta(name=name))
    )
    return name


@pytest.fixture(scope="session")
def e2e_sgc(e2e_k8s: k8s_client.ApiClient) -> Objects:
    return Objects(e2e_k8s, "scheduledgcpcalls")


def gsa(name: str) -> str:
    return f"{name}@{PROJECT}.iam.gserviceaccount.com"


def bind_workload_identity(
    k8s: k8s_client.ApiClient, emulator: Emulator, namespace: str, ksa: str, google_sa: str
) -> None:
    """What a team does for its namespace: the KSA, annotated, and the IAM binding on the GSA."""
    ensure_service_account(
        k8s, namespace, ksa, annotations={"iam.gke.io/gcp-service-account": google_sa}
    )
    emulator.admin(
        "POST",
        "/iam/policy:grant",
        {"member": f"serviceAccount:{POOL}[{namespace}/{ksa}]", "serviceAccount": google_sa},
    )


def ready(sgc: Objects, namespace: str, name: str, op: Operator) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = sgc.get(namespace, name)
        gen = (obj or {}).get("metadata", {}).get("generation")
        if (
            condition(obj, "Ready").get("status") == "True"
            and obj
            and (obj["status"].get("observedGeneration") == gen)
        ):
            return obj
        return None

    try:
        return dict(wait_for(check, timeout=60, what=f"{namespace}/{name} Ready"))
    except AssertionError:
        print(dump(sgc.get(namespace, name)))
        print(op.log()[-6000:])
        raise


def sample_call(name: str, body: dict[str, Any], **spec: Any) -> dict[str, Any]:
    """A ScheduledGcpCall like the integration suite's, with no project/location/KSA of its own."""
    return {
        "apiVersion": "gcpcall.dev/v1alpha1",
        "kind": "ScheduledGcpCall",
        "metadata": {"name": name},
        "spec": {
            "schedule": "5 3 * * *",
            "timeZone": "Europe/Berlin",
            "target": {
                "uri": "https://target.googleapis.com/compute/v1/projects/p/zones/z"
                "/instanceGroupManagers/ig/resize?size=4",
                "method": "POST",
                "headers": [{"name": "Content-Type", "value": "application/json"}],
                "body": body,
                "auth": {
                    "oauth": {"scope": "https://www.googleapis.com/auth/cloud-platform"},
                    "serviceAccountEmail": gsa("runner"),
                },
            },
            **spec,
        },
    }


def sa_kubectl(
    install: Install, *args: str, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """kubectl authenticated as the operator's ServiceAccount (its token, not impersonation)."""
    return subprocess.run(
        [str(BIN / "kubectl"), "--kubeconfig", str(install.kubeconfig), *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, sort_keys=True, default=str)
