"""Each namespace acts as its own Google identity, through the operator process.

The operator runs as `gcpcall-operator run` under a Kubernetes ServiceAccount that holds
only the RBAC it needs, in the WorkloadIdentity mode, against an emulator started with
`--require-auth`: every Cloud Scheduler RPC needs a bearer token, the call log names its
caller, and attaching a token service account needs actAs on it. The emulator's STS checks
the KSA tokens against the API server's own issuer (discovery + JWKS), as Google's STS
checks a cluster's. So a job created "as a@" proves the whole chain: TokenRequest -> STS ->
generateAccessToken -> CreateJob.

The session's operator (Operator mode, anonymous) is stopped for this module and started
again afterwards: two operators never watch the API server at once. This module's objects
are removed before that, so the session operator never sees them.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from google.api_core import exceptions as gexc
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from tests.conftest import ensure_service_account
from tests.integration.conftest import (
    CLUSTER,
    LOCATION,
    PROJECT,
    TARGET_HOST,
    Emulator,
    Objects,
    Operator,
    Target,
    _stop,
    condition,
    operator_env,
    wait_for,
)

from gcpcall.gcp.identity import ANNOTATION

if TYPE_CHECKING:
    from tests.conftest import ControlPlane

POOL = f"{PROJECT}.svc.id.goog"
CLUSTER_URL = (
    f"https://container.googleapis.com/v1/projects/{PROJECT}/locations/{LOCATION}"
    f"/clusters/{CLUSTER}"
)
PROJECT_NUMBER = "123456789012"
OPERATOR_GSA = f"gcpcall-operator@{PROJECT}.iam.gserviceaccount.com"
_client_from_config: Any = k8s_config.new_client_from_config
TOKENISH = re.compile(r"ya29\.|eyJ[A-Za-z0-9_-]{8,}|Bearer\s+[A-Za-z0-9._~+/=-]{8,}")
GROUP, VERSION = "gcpcall.dev", "v1alpha1"
KINDS = ("scheduledgcpcalls", "gcptasks")


def gsa(name: str) -> str:
    return f"{name}@{PROJECT}.iam.gserviceaccount.com"


def ksa_principal(namespace: str, ksa: str) -> str:
    return (
        f"principal://iam.googleapis.com/projects/{PROJECT_NUMBER}/locations/global/"
        f"workloadIdentityPools/{POOL}/subject/ns/{namespace}/sa/{ksa}"
    )


def wi_member(namespace: str, ksa: str) -> str:
    return f"serviceAccount:{POOL}[{namespace}/{ksa}]"


def job_name(namespace: str, name: str) -> str:
    return f"projects/{PROJECT}/locations/{LOCATION}/jobs/{CLUSTER}_{namespace}_{name}"


# --- the emulator with --require-auth ----------------------------------------------------


class SecuredEmulator(Emulator):
    """The emulator process with `--require-auth`; test-side reads carry a token."""

    tester_token: str = ""

    def http(self, method: str, path: str, body: Any = None) -> Any:
        """A call to any of the emulator's HTTP routes (JSON in and out)."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.http_url}{path}", data=data, method=method,
            headers={"Content-Type": "application/json", "Metadata-Flavor": "Google"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def bearer(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.tester_token}")]

    def get_job(self, name: str) -> Any:
        """The job, read with the test's own token; None when there is none."""
        try:
            return self.scheduler().get_job(name=name, metadata=self.bearer())
        except gexc.NotFound:
            return None

    def grant(self, member: str, service_account: str) -> None:
        self.admin(
            "POST", "/iam/policy:grant", {"member": member, "serviceAccount": service_account}
        )

    def exchanges(self, principal: str) -> list[dict[str, Any]]:
        doc = self.admin("GET", "/sts/exchanges")
        return [e for e in doc["exchanges"] if e["principal"] == principal]

    def iam_calls(self, caller: str) -> list[dict[str, Any]]:
        doc = self.admin("GET", "/iam/calls?method=GenerateAccessToken")
        return [c for c in doc["calls"] if c["caller"] == caller]

    def calls_by(self, method: str, principal: str | None, code: str = "OK") -> int:
        return sum(
            1 for c in self.calls(method) if c["principal"] == principal and c["code"] == code
        )


def _start_secured_emulator(log_path: Path) -> SecuredEmulator:
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gcpcall", "emulator", "--grpc-port", "0", "--http-port", "0",
         "--require-auth"],
        stdout=subprocess.PIPE, stderr=log, start_new_session=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"emulator did not start; see {log_path}")
    ports = json.loads(line)
    return SecuredEmulator(int(ports["grpc_port"]), int(ports["http_port"]), proc, log_path)


# --- the operator under a ServiceAccount -------------------------------------------------


@dataclass
class ScopedOperator(Operator):
    """The operator process watching only this module's namespaces."""

    namespaces: tuple[str, ...] = ()

    def start(self) -> None:
        log = self.log_path.open("ab")
        watch = [arg for ns in self.namespaces for arg in ("--namespace", ns)]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gcpcall", "run", "--metrics-port", "0", "--liveness", "",
             *watch],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )


def operator_rules(
    *, token_request: bool, service_accounts: bool = True
) -> list[k8s_client.V1PolicyRule]:
    """Exactly what the operator needs: `serviceaccounts/token` only for WorkloadIdentity,
    `serviceaccounts` not at all in the Operator mode."""
    rule = k8s_client.V1PolicyRule
    rules = [
        rule(api_groups=[GROUP], resources=list(KINDS), verbs=["get", "list", "watch", "patch"]),
        rule(api_groups=[GROUP], resources=[f"{k}/status" for k in KINDS], verbs=["patch"]),
        rule(api_groups=[""], resources=["events"], verbs=["create"]),
        rule(api_groups=[""], resources=["namespaces"], verbs=["get", "list", "watch"]),
        rule(api_groups=["apiextensions.k8s.io"], resources=["customresourcedefinitions"],
             verbs=["list", "watch"]),
        rule(api_groups=[""], resources=["configmaps"], verbs=["get"]),
    ]
    if service_accounts:
        rules.append(rule(api_groups=[""], resources=["serviceaccounts"], verbs=["get"]))
    if token_request:
        rules.append(rule(api_groups=[""], resources=["serviceaccounts/token"], verbs=["create"]))
    return rules


def operator_kubeconfig(
    k8s: k8s_client.ApiClient, controlplane: ControlPlane, namespace: str, name: str,
    rules: list[k8s_client.V1PolicyRule], path: Path,
) -> str:
    """A ServiceAccount bound to a ClusterRole of `rules`, and a kubeconfig that is it."""
    ensure_service_account(k8s, namespace, name)
    rbac = k8s_client.RbacAuthorizationV1Api(k8s)
    role = f"{namespace}-{name}"
    rbac.create_cluster_role(k8s_client.V1ClusterRole(
        metadata=k8s_client.V1ObjectMeta(name=role), rules=rules))
    rbac.create_cluster_role_binding(k8s_client.V1ClusterRoleBinding(
        metadata=k8s_client.V1ObjectMeta(name=role),
        role_ref=k8s_client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="ClusterRole",
                                      name=role),
        subjects=[k8s_client.RbacV1Subject(kind="ServiceAccount", name=name,
                                           namespace=namespace)],
    ))
    request = k8s_client.AuthenticationV1TokenRequest(
        spec=k8s_client.V1TokenRequestSpec(audiences=[], expiration_seconds=2 * 3600))
    issued = k8s_client.CoreV1Api(k8s).create_namespaced_service_account_token(
        name, namespace, request)
    assert issued.status is not None
    token = issued.status.token
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": name,
        "clusters": [{"name": "itest", "cluster": {
            "server": controlplane.server, "certificate-authority": controlplane.ca_file}}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": "itest", "user": name}}],
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return str(path)


@dataclass
class World:
    """What the module's tests share."""

    emulator: SecuredEmulator
    k8s: k8s_client.ApiClient
    sgc: Objects
    a: str  # namespace of team A
    b: str  # namespace of team B
    cache: str  # namespace of the caching story
    imp: str  # namespace of the Impersonation story
    own: str  # namespace of the Operator-mode story
    wi_operator: ScopedOperator
    imp_operator: ScopedOperator
    own_operator: ScopedOperator

    @property
    def namespaces(self) -> tuple[str, ...]:
        return (self.a, self.b, self.cache, self.imp, self.own)

    @property
    def operators(self) -> tuple[ScopedOperator, ...]:
        return (self.wi_operator, self.imp_operator, self.own_operator)


def _new_namespace(k8s: k8s_client.ApiClient, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    k8s_client.CoreV1Api(k8s).create_namespace(
        k8s_client.V1Namespace(metadata=k8s_client.V1ObjectMeta(name=name)))
    return name


def _remove_objects(k8s: k8s_client.ApiClient, namespaces: tuple[str, ...]) -> None:
    """Delete every object of ours in `namespaces` at once, finalizers and all."""
    api = k8s_client.CustomObjectsApi(k8s)
    for namespace in namespaces:
        for plural in KINDS:
            listed: Any = api.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)
            for item in listed["items"]:
                name = item["metadata"]["name"]
                try:
                    api.patch_namespaced_custom_object(
                        GROUP, VERSION, namespace, plural, name,
                        {"metadata": {"finalizers": None}})
                    api.delete_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
                except k8s_client.ApiException as error:
                    if error.status != 404:
                        raise


def _settle(operator: Operator, log_offset: int, emulator: Emulator) -> None:
    """Wait until the restarted session operator has resumed the objects of earlier modules
    (its writes to the session emulator have stopped; the drift checks' reads go on), so
    that its resume burst does not land in the next module's counts of emulator calls."""
    wait_for(lambda: "Initial authentication has finished" in operator.log()[log_offset:],
             timeout=60, what="the session operator started")
    seen: list[int] = []

    def quiet() -> bool:
        seen.append(len(emulator.writes()))
        return len(seen) > 6 and len(set(seen[-6:])) == 1

    wait_for(quiet, timeout=60, interval=0.5, what="the session operator settled")


@pytest.fixture(scope="module")
def world(
    controlplane: ControlPlane, k8s: k8s_client.ApiClient, sgc: Objects,
    operator: Operator, emulator: Emulator, target: Target,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[World]:
    session_emulator = emulator
    workdir = tmp_path_factory.mktemp("identity-operator")
    operator.stop()  # never two operators on one API server
    emulator = _start_secured_emulator(workdir / "emulator.log")  # this module's own
    namespaces = tuple(_new_namespace(k8s, p) for p in ("wi-a", "wi-b", "wi-cache", "imp", "own"))
    system = _new_namespace(k8s, "gcpcall-system")
    operators: list[ScopedOperator] = []
    try:
        emulator.admin("POST", "/sts/trusts", {
            "audience": f"identitynamespace:{POOL}:{CLUSTER_URL}",
            "issuer": controlplane.issuer,
            "pool": POOL,
            "projectNumber": PROJECT_NUMBER,
            "caPem": Path(controlplane.ca_file).read_text(),
        })
        emulator.admin("PUT", "/hostmap", {
            "host": TARGET_HOST, "base_url": f"http://127.0.0.1:{target.port}"})
        # the metadata server is the Impersonation operator's ADC, and the test's own reader
        emulator.admin("PUT", "/metadata", {"email": OPERATOR_GSA, "projectId": PROJECT})
        emulator.tester_token = emulator.http(
            "GET", "/computeMetadata/v1/instance/service-accounts/default/token")["access_token"]

        base = operator_env(controlplane, emulator)
        base.pop("GCE_METADATA_HOST", None)
        wi_env = {
            **base,
            "KUBECONFIG": operator_kubeconfig(
                k8s, controlplane, system, "wi-operator", operator_rules(token_request=True),
                workdir / "wi.kubeconfig"),
            "GCPCALL_IDENTITY_MODE": "WorkloadIdentity",
            "GCPCALL_STS_ENDPOINT": f"{emulator.http_url}/v1/token",
            "GCPCALL_IAM_CREDENTIALS_ENDPOINT": emulator.http_url,
            "GCPCALL_WORKLOAD_POOL": POOL,
            "GCPCALL_CLUSTER_URL": CLUSTER_URL,
        }
        imp_env = {
            **base,
            "KUBECONFIG": operator_kubeconfig(
                k8s, controlplane, system, "imp-operator", operator_rules(token_request=False),
                workdir / "imp.kubeconfig"),
            "GCPCALL_IDENTITY_MODE": "Impersonation",
            "GCPCALL_IAM_CREDENTIALS_ENDPOINT": emulator.http_url,
            "GCE_METADATA_HOST": emulator.http_url.removeprefix("http://"),
            "GCPCALL_IMPERSONATION_DELEGATES": f"{gsa('delegate-1')},{gsa('delegate-2')}",
        }
        own_env = {
            **base,
            "KUBECONFIG": operator_kubeconfig(
                k8s, controlplane, system, "own-operator",
                operator_rules(token_request=False, service_accounts=False),
                workdir / "own.kubeconfig"),
            "GCPCALL_IDENTITY_MODE": "Operator",
            "GCE_METADATA_HOST": emulator.http_url.removeprefix("http://"),
        }
        operators = [
            ScopedOperator(wi_env, workdir / "wi-operator.log", namespaces=namespaces[:3]),
            ScopedOperator(imp_env, workdir / "imp-operator.log", namespaces=namespaces[3:4]),
            ScopedOperator(own_env, workdir / "own-operator.log", namespaces=namespaces[4:]),
        ]
        operators[0].start()
        a, b, cache, imp, own = namespaces
        yield World(emulator, k8s, sgc, a, b, cache, imp, own, *operators)
    finally:
        for op in operators:
            op.stop()
        _remove_objects(k8s, namespaces)
        rbac = k8s_client.RbacAuthorizationV1Api(k8s)
        for name in ("wi-operator", "imp-operator", "own-operator"):
            for delete in (rbac.delete_cluster_role_binding, rbac.delete_cluster_role):
                try:
                    delete(f"{system}-{name}")
                except k8s_client.ApiException as error:
                    if error.status != 404:
                        raise
        _stop(emulator.proc)
        restarted_at = len(operator.log())
        operator.start()
        _settle(operator, restarted_at, session_emulator)


# --- helpers --------------------------------------------------------------------------------


def scheduled_call(name: str, ksa: str | None, **auth: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "schedule": "0 0 1 1 *",  # never due during a test: runs happen when fired
        "timeZone": "UTC",
        "target": {
            "uri": f"https://{TARGET_HOST}/identity/{name}",
            "method": "POST",
            "auth": {"oauth": {"scope": "https://www.googleapis.com/auth/cloud-platform"},
                     **auth},
        },
    }
    if ksa is not None:
        spec["serviceAccountName"] = ksa
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ScheduledGcpCall",
            "metadata": {"name": name}, "spec": spec}


def wait_ready(
    sgc: Objects, namespace: str, name: str, reason: str = "UpToDate", timeout: float = 60.0
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj: dict[str, Any] | None = sgc.get(namespace, name)
        if condition(obj, "Ready").get("reason") == reason and obj and (
            obj["status"].get("observedGeneration") == obj["metadata"].get("generation")
        ):
            return obj
        return None

    return dict(wait_for(check, timeout=timeout, what=f"{namespace}/{name} Ready {reason}"))


def annotated_ksa(world: World, namespace: str, ksa: str, email: str) -> None:
    ensure_service_account(world.k8s, namespace, ksa, {ANNOTATION: email})


# --- the stories ----------------------------------------------------------------------------


def test_workload_identity_end_to_end(world: World, target: Target) -> None:
    emu, a = world.emulator, gsa("team-a")
    annotated_ksa(world, world.a, "runner", a)
    emu.grant(wi_member(world.a, "runner"), a)
    world.sgc.create(world.a, scheduled_call("wi-job", "runner"))
    obj = wait_ready(world.sgc, world.a, "wi-job")

    # api.md/CRD: the ServiceAccount acted as and its Google account, as for a GcpTask
    assert obj["status"]["identity"] == {"serviceAccountName": "runner",
                                         "googleServiceAccount": a}
    job = emu.get_job(job_name(world.a, "wi-job"))
    assert job is not None
    assert job.http_target.oauth_token.service_account_email == a
    # the chain, as the emulator saw it: the KSA token verified against the API server's
    # issuer -> a federated token for A's KSA -> a token for a@ -> CreateJob as a@
    principal = ksa_principal(world.a, "runner")
    assert [e["status"] for e in emu.exchanges(principal)] == [200]
    [mint] = emu.iam_calls(principal)
    assert (mint["target"], mint["status"]) == (a, 200)
    assert emu.calls_by("CreateJob", a) == 1
    assert emu.calls_by("CreateJob", None, "UNAUTHENTICATED") == 0

    # the job runs as a@ too: Cloud Scheduler sends a token of a@ to the target
    emu.admin("POST", "/scheduler/fire", {"job": job.name, "wait": True})
    [run] = target.received("/identity/wi-job")
    token = run.headers["Authorization"].removeprefix("Bearer ")
    info = emu.http("GET", f"/oauth2/v3/tokeninfo?access_token={urllib.parse.quote(token)}")
    assert info["email"] == a


def test_act_as_on_a_token_service_account_not_granted_is_refused(world: World) -> None:
    emu, a, other = world.emulator, gsa("team-a"), gsa("someone-else")
    annotated_ksa(world, world.a, "runner", a)
    emu.grant(wi_member(world.a, "runner"), a)
    world.sgc.create(world.a, scheduled_call("borrow", "runner", serviceAccountEmail=other))
    obj = wait_ready(world.sgc, world.a, "borrow", reason="PermissionDenied")
    message = condition(obj, "Ready")["message"]
    assert "iam.serviceAccounts.actAs" in message
    assert other in message
    assert emu.calls_by("CreateJob", a, "PERMISSION_DENIED") >= 1
    assert emu.get_job(job_name(world.a, "borrow")) is None

    # once a@ may act as it, an object attaching it gets its job (as a@)
    emu.grant(a, other)
    world.sgc.create(world.a, scheduled_call("borrow-granted", "runner", serviceAccountEmail=other))
    wait_ready(world.sgc, world.a, "borrow-granted")
    job = emu.get_job(job_name(world.a, "borrow-granted"))
    assert job is not None
    assert job.http_target.oauth_token.service_account_email == other


def test_namespace_b_cannot_act_as_namespace_a_identity(world: World) -> None:
    emu, a = world.emulator, gsa("team-a")
    annotated_ksa(world, world.a, "runner", a)
    emu.grant(wi_member(world.a, "runner"), a)
    annotated_ksa(world, world.a, "only-in-a", a)
    annotated_ksa(world, world.b, "runner", a)  # B claims A's Google service account
    world.sgc.create(world.b, scheduled_call("claim", "runner"))
    world.sgc.create(world.b, scheduled_call("borrow-ksa", "only-in-a"))

    obj = wait_ready(world.sgc, world.b, "claim", reason="IdentityNotReady")
    ready = condition(obj, "Ready")
    assert ready["status"] == "False"
    assert "GenerateAccessToken" in ready["message"]
    assert "PERMISSION_DENIED" in ready["message"]
    assert "googleServiceAccount" not in (obj["status"].get("identity") or {})
    b_principal = ksa_principal(world.b, "runner")
    assert [e["status"] for e in emu.exchanges(b_principal)] == [200]  # B is B...
    assert {c["status"] for c in emu.iam_calls(b_principal)} == {403}  # ...but not a@

    # A's KSA name means nothing in B: there is no field naming another namespace
    obj = wait_ready(world.sgc, world.b, "borrow-ksa", reason="IdentityNotReady")
    message = condition(obj, "Ready")["message"]
    assert "ServiceAccount" in message
    assert "not found" in message
    assert not emu.exchanges(ksa_principal(world.b, "only-in-a"))
    for name in ("claim", "borrow-ksa"):
        assert emu.get_job(job_name(world.b, name)) is None
    assert emu.calls_by("CreateJob", b_principal) == 0


def test_a_missing_ksa_is_named(world: World) -> None:
    world.sgc.create(world.a, scheduled_call("ghostly", "ghost"))
    obj = wait_ready(world.sgc, world.a, "ghostly", reason="IdentityNotReady")
    ready = condition(obj, "Ready")
    assert ready["status"] == "False"
    assert ready["message"].startswith("ServiceAccount")
    assert f'"ghost" not found in namespace "{world.a}"' in ready["message"]
    assert not world.emulator.exchanges(ksa_principal(world.a, "ghost"))
    assert world.emulator.get_job(job_name(world.a, "ghostly")) is None


def test_tokens_are_cached_per_identity(world: World) -> None:
    """20 objects over 2 identities: one STS exchange and one generateAccessToken each."""
    emu, ns = world.emulator, world.cache
    identities = {"runner-1": gsa("cache-1"), "runner-2": gsa("cache-2")}
    for ksa, email in identities.items():
        annotated_ksa(world, ns, ksa, email)
        emu.grant(wi_member(ns, ksa), email)
    names = [f"call-{i}" for i in range(20)]
    for i, name in enumerate(names):
        world.sgc.create(ns, scheduled_call(name, f"runner-{i % 2 + 1}"))
    for name in names:
        wait_ready(world.sgc, ns, name, timeout=120)
    # and resynced: the sync loop listed each identity's jobs again since
    lists = {email: emu.calls_by("ListJobs", email) for email in identities.values()}
    wait_for(lambda: all(emu.calls_by("ListJobs", e) > n for e, n in lists.items()),
             what="a resync of both identities")

    for ksa, email in identities.items():
        principal = ksa_principal(ns, ksa)
        assert [e["status"] for e in emu.exchanges(principal)] == [200], ksa
        assert [(c["target"], c["status"]) for c in emu.iam_calls(principal)] == [
            (email, 200)], ksa
        assert emu.calls_by("CreateJob", email) == 10
        status = world.sgc.get(ns, names[int(ksa[-1]) - 1])
        assert status is not None
        assert status["status"]["identity"]["googleServiceAccount"] == email


def test_impersonation_through_a_delegation_chain_of_two(world: World) -> None:
    """The operator's ADC (the metadata server) -> delegate-1 -> delegate-2 -> the GSA."""
    emu, target_gsa, unchained = world.emulator, gsa("team-imp"), gsa("team-imp-2")
    d1, d2 = gsa("delegate-1"), gsa("delegate-2")
    annotated_ksa(world, world.imp, "runner", target_gsa)
    annotated_ksa(world, world.imp, "runner-2", unchained)
    emu.grant(OPERATOR_GSA, d1)
    emu.grant(d1, d2)
    emu.grant(d2, target_gsa)  # delegate-2 may not act as team-imp-2: the chain breaks there
    world.sgc.create(world.imp, scheduled_call("chained", "runner"))
    world.sgc.create(world.imp, scheduled_call("broken-chain", "runner-2"))

    world.wi_operator.stop()  # one operator at a time
    world.imp_operator.start()
    try:
        obj = wait_ready(world.sgc, world.imp, "chained")
        broken = wait_ready(world.sgc, world.imp, "broken-chain", reason="IdentityNotReady")
    finally:
        world.imp_operator.stop()
        world.wi_operator.start()

    assert obj["status"]["identity"]["googleServiceAccount"] == target_gsa
    job = emu.get_job(job_name(world.imp, "chained"))
    assert job is not None
    assert job.http_target.oauth_token.service_account_email == target_gsa
    assert emu.calls_by("CreateJob", target_gsa) == 1
    chain = (f"projects/-/serviceAccounts/{d1}", f"projects/-/serviceAccounts/{d2}")
    minted = {(c["target"], tuple(c["delegates"]), c["status"])
              for c in emu.iam_calls(OPERATOR_GSA)}
    assert minted == {(target_gsa, chain, 200), (unchained, chain, 403)}
    message = condition(broken, "Ready")["message"]
    assert message.startswith("GenerateAccessToken")
    assert "PERMISSION_DENIED" in message
    assert emu.get_job(job_name(world.imp, "broken-chain")) is None
    # this operator's ServiceAccount cannot request KSA tokens, and did not need to
    assert not emu.exchanges(ksa_principal(world.imp, "runner"))


def test_operator_mode_uses_the_operators_own_credentials(world: World) -> None:
    """The metadata server's account for every object; no KSA is read."""
    emu = world.emulator
    world.sgc.create(world.own, scheduled_call("own", None))
    world.sgc.create(world.own, scheduled_call("own-ksa", "not-even-there"))
    world.wi_operator.stop()  # one operator at a time
    world.own_operator.start()
    try:
        objs = [wait_ready(world.sgc, world.own, name) for name in ("own", "own-ksa")]
    finally:
        world.own_operator.stop()
        world.wi_operator.start()
    for obj in objs:
        assert obj["status"]["identity"]["googleServiceAccount"] == OPERATOR_GSA
        job = emu.get_job(obj["status"]["jobName"])
        assert job is not None
        assert job.http_target.oauth_token.service_account_email == OPERATOR_GSA
    assert emu.calls_by("CreateJob", OPERATOR_GSA) == 2
    assert not emu.exchanges(ksa_principal(world.own, "not-even-there"))


def unauthenticated(emu: SecuredEmulator) -> int:
    """Scheduler calls refused for their token (a revoked token names no caller)."""
    return sum(1 for c in emu.calls() if c["code"] == "UNAUTHENTICATED")


def test_a_revoked_token_is_replaced_and_the_call_retried(world: World) -> None:
    emu, r = world.emulator, gsa("team-r")
    annotated_ksa(world, world.a, "rotating", r)
    emu.grant(wi_member(world.a, "rotating"), r)
    world.sgc.create(world.a, scheduled_call("rotated", "rotating"))
    wait_ready(world.sgc, world.a, "rotated")
    principal = ksa_principal(world.a, "rotating")
    assert len(emu.iam_calls(principal)) == 1
    refused = unauthenticated(emu)

    # Google revokes r@'s token (as after a key rotation); the operator still holds it
    assert emu.admin("POST", "/iam/tokens:revoke", {"principal": r}) == {"revoked": 1}
    world.sgc.patch(world.a, "rotated", {"spec": {"description": "after the revocation"}})
    obj = wait_ready(world.sgc, world.a, "rotated")

    job = emu.get_job(job_name(world.a, "rotated"))
    assert job is not None
    assert job.description.startswith("after the revocation")
    # the revoked token was refused at least once, then a new one was minted and used
    assert unauthenticated(emu) > refused
    assert [c["status"] for c in emu.iam_calls(principal)][:2] == [200, 200]
    assert emu.calls_by("UpdateJob", r) >= 1
    assert obj["status"]["identity"]["googleServiceAccount"] == r


def test_the_operators_hold_only_their_rbac(world: World) -> None:
    def allowed(kubeconfig: str, verb: str, resource: str, subresource: str = "",
                group: str = "") -> bool:
        api = _client_from_config(config_file=kubeconfig)
        try:
            attributes = k8s_client.V1ResourceAttributes(
                verb=verb, resource=resource, subresource=subresource, group=group,
                namespace=world.a)
            review = k8s_client.V1SelfSubjectAccessReview(
                spec=k8s_client.V1SelfSubjectAccessReviewSpec(resource_attributes=attributes))
            answer = k8s_client.AuthorizationV1Api(api).create_self_subject_access_review(review)
            return bool(answer.status is not None and answer.status.allowed)
        finally:
            api.close()

    wi, imp, own = (op.env["KUBECONFIG"] for op in world.operators)
    assert allowed(wi, "create", "serviceaccounts", "token")
    assert not allowed(imp, "create", "serviceaccounts", "token")
    assert not allowed(own, "create", "serviceaccounts", "token")
    assert allowed(wi, "get", "serviceaccounts")
    assert allowed(imp, "get", "serviceaccounts")
    assert not allowed(own, "get", "serviceaccounts")
    for kubeconfig in (wi, imp, own):
        assert allowed(kubeconfig, "patch", "scheduledgcpcalls", "status", GROUP)
        assert not allowed(kubeconfig, "get", "secrets")
        assert not allowed(kubeconfig, "list", "configmaps")
        assert not allowed(kubeconfig, "delete", "scheduledgcpcalls", "", GROUP)
        assert not allowed(kubeconfig, "update", "serviceaccounts")


def test_no_token_material_in_logs_events_or_status(world: World) -> None:
    """Runs last: everything the operators wrote in this module, scanned for tokens."""
    emu, a = world.emulator, gsa("team-a")
    annotated_ksa(world, world.a, "runner", a)
    emu.grant(wi_member(world.a, "runner"), a)
    world.sgc.create(world.a, scheduled_call("scanned", "runner"))  # tokens used just now
    wait_ready(world.sgc, world.a, "scanned")
    sample = emu.http(
        "GET", "/computeMetadata/v1/instance/service-accounts/default/token")["access_token"]
    assert TOKENISH.search(sample)  # the pattern matches the tokens the emulator issues
    assert TOKENISH.search(f"Bearer {sample}")
    assert emu.exchanges(ksa_principal(world.a, "runner"))  # KSA tokens were exchanged

    texts: list[tuple[str, str]] = []
    for op in world.operators:
        log = op.log()
        assert "gcpcall-operator started" in log
        texts.append((str(op.log_path.name), log))
    core = k8s_client.CoreV1Api(world.k8s)
    custom = k8s_client.CustomObjectsApi(world.k8s)
    events = objects = 0
    for namespace in world.namespaces:
        for event in core.list_namespaced_event(namespace).items:
            events += 1
            texts.append((f"event {namespace}/{event.metadata.name}",
                          f"{event.reason} {event.message}"))
        for plural in KINDS:
            listed: Any = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)
            for item in listed["items"]:
                objects += 1
                texts.append((f"{plural} {namespace}/{item['metadata']['name']}",
                              json.dumps(item)))
    assert events > 0
    assert objects > 0
    leaks = [(where, match.group(0)) for where, text in texts
             for match in [TOKENISH.search(text)] if match]
    assert leaks == []
