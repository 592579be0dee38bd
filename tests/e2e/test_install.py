"""The chart installed on a real API server with RBAC on, and the operator running with exactly
the chart's ServiceAccount and ClusterRole: enough to do its work, and nothing more.

The operator runs in the WorkloadIdentity mode (the chart's default), so the identity chain
(ServiceAccount read, TokenRequest, STS, generateAccessToken) runs under the chart's RBAC too.
The objects are the ScheduledGcpCall examples of examples/ and a built-in sample with its body
in a ConfigMap, each in its own namespace with the ServiceAccount and IAM binding a team
would create.
"""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s_client

from tests.conftest import REPO, ControlPlane
from tests.e2e.conftest import (
    CLUSTER,
    DEFAULT_KSA,
    LOCATION,
    OPERATOR_NS,
    OPERATOR_SA,
    RELEASE,
    SA_USER,
    Install,
    bind_workload_identity,
    gsa,
    ready,
    sa_kubectl,
    sample_call,
)
from tests.e2e.test_chart_render import BASE_RULES, SA_GET, TOKEN
from tests.integration.conftest import Emulator, Objects, Operator, condition, wait_for

EXAMPLES = REPO / "examples"
KIND = "ScheduledGcpCall"


# --- the objects ---------------------------------------------------------------------------


def builtin_sample() -> list[dict[str, Any]]:
    """A body in a ConfigMap (the chart's cluster-wide ConfigMap `get`), the default KSA."""
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "resize-body"},
            "data": {"body.json": '{"size": 4}'},
        },
        sample_call("scale-up", {"fromConfigMap": {"name": "resize-body", "key": "body.json"}}),
    ]


def example_sets() -> list[tuple[str, list[dict[str, Any]]]]:
    """(id, documents) per examples/ file that has a ScheduledGcpCall, and the sample."""
    sets = []
    for path in sorted(EXAMPLES.glob("**/*.yaml")) if EXAMPLES.is_dir() else []:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        if any(d.get("spec", {}).get("delivery") == "Relay" for d in docs):
            # Relay examples need the relay's public URL, which this install has not:
            # the demo and tests/integration/test_relay*.py run them
            continue
        if any(d.get("kind") == KIND for d in docs):
            # GcpTasks are left out here (their examples need a queue); their handler
            # lives elsewhere and has its own stories
            sets.append((str(path.relative_to(REPO)), [d for d in docs if d["kind"] != "GcpTask"]))
    return [*sets, ("builtin-configmap-body", builtin_sample())]


def token_service_account(spec: dict[str, Any]) -> str | None:
    auth = spec.get("target", {}).get("auth") or {}
    email = auth.get("serviceAccountEmail")
    for kind in ("oauth", "oidc"):
        email = email or (auth.get(kind) or {}).get("serviceAccountEmail")
    return str(email) if email else None


def prepare_namespace(
    k8s: k8s_client.ApiClient, emulator: Emulator, namespace: str, docs: list[dict[str, Any]]
) -> dict[str, str]:
    """The KSAs the calls name, each bound to a GSA that may act as the call's token SA.

    Returns KSA -> GSA. A KSA the example file defines keeps its own GSA annotation.
    """
    own = {
        d["metadata"]["name"]: (d["metadata"].get("annotations") or {}).get(
            "iam.gke.io/gcp-service-account"
        )
        for d in docs
        if d["kind"] == "ServiceAccount"
    }
    bound: dict[str, str] = {}
    for d in docs:
        if d["kind"] != KIND:
            continue
        ksa = d["spec"].get("serviceAccountName") or DEFAULT_KSA
        token_sa = token_service_account(d["spec"])
        google_sa = own.get(ksa) or token_sa or gsa("runner")
        bind_workload_identity(k8s, emulator, namespace, ksa, google_sa)
        if token_sa and token_sa != google_sa:
            emulator.admin(
                "POST",
                "/iam/policy:grant",
                {"member": f"serviceAccount:{google_sa}", "serviceAccount": token_sa},
            )
        bound[ksa] = google_sa
    return bound


def apply_in(cp: ControlPlane, namespace: str, docs: list[dict[str, Any]]) -> None:
    docs = copy.deepcopy(docs)
    for d in docs:
        d["metadata"].pop("namespace", None)
    cp.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(docs))


# --- it works ------------------------------------------------------------------------------

SETS = example_sets()


@pytest.mark.parametrize("docs", [docs for _, docs in SETS], ids=[i for i, _ in SETS])
def test_examples_become_ready_with_a_job_made_as_their_namespace_identity(
    docs: list[dict[str, Any]],
    e2e_operator: Operator,
    e2e_controlplane: ControlPlane,
    e2e_k8s: k8s_client.ApiClient,
    e2e_emulator: Emulator,
    e2e_sgc: Objects,
    e2e_namespace: str,
) -> None:
    team_project = "e2e-team-project"
    # the project comes from the namespace annotation (the operator reads the namespace)
    # unless the example names its own
    k8s_client.CoreV1Api(e2e_k8s).patch_namespace(
        e2e_namespace, {"metadata": {"annotations": {"gcpcall.dev/project": team_project}}}
    )
    bound = prepare_namespace(e2e_k8s, e2e_emulator, e2e_namespace, docs)
    apply_in(e2e_controlplane, e2e_namespace, docs)

    calls = [d for d in docs if d["kind"] == KIND]
    for call in calls:
        name, spec = call["metadata"]["name"], call["spec"]
        obj = ready(e2e_sgc, e2e_namespace, name, e2e_operator)
        job_name = obj["status"]["jobName"]
        project = spec.get("project") or team_project
        location = spec.get("location") or LOCATION
        job_id = f"{CLUSTER}_{e2e_namespace}_{name.replace('.', '_')}"
        assert job_name == f"projects/{project}/locations/{location}/jobs/{job_id}"
        job = e2e_emulator.scheduler().get_job(name=job_name)
        assert job.schedule == spec["schedule"]
        # made as the namespace's own Google identity, through Workload Identity
        ksa = spec.get("serviceAccountName") or DEFAULT_KSA
        assert obj["status"]["identity"]["googleServiceAccount"] == bound[ksa]
        body = (spec["target"].get("body") or {}).get("fromConfigMap")
        if body:
            cm = next(
                d
                for d in docs
                if d["kind"] == "ConfigMap" and d["metadata"]["name"] == body["name"]
            )
            assert job.http_target.body == cm["data"][body["key"]].encode()

    exchanges = e2e_emulator.admin("GET", "/sts/exchanges")["exchanges"]
    principals = {e["principal"] for e in exchanges if e["status"] == 200}
    for ksa in bound:
        assert any(p and p.endswith(f"/ns/{e2e_namespace}/sa/{ksa}") for p in principals), (
            f"no STS exchange for {e2e_namespace}/{ksa}: {exchanges}"
        )


def secret_call(name: str) -> dict[str, Any]:
    return sample_call(name, {"fromSecret": {"name": "payload", "key": "body.json"}})


def test_a_body_in_a_secret_needs_the_namespace_to_grant_that_secret(
    e2e_operator: Operator,
    e2e_controlplane: ControlPlane,
    e2e_k8s: k8s_client.ApiClient,
    e2e_emulator: Emulator,
    e2e_sgc: Objects,
    e2e_namespace: str,
) -> None:
    ns = e2e_namespace
    bind_workload_identity(e2e_k8s, e2e_emulator, ns, DEFAULT_KSA, gsa("runner"))
    secret_body = b'{"size": 9}'
    k8s_client.CoreV1Api(e2e_k8s).create_namespaced_secret(
        ns,
        k8s_client.V1Secret(
            metadata=k8s_client.V1ObjectMeta(name="payload"),
            data={"body.json": base64.b64encode(secret_body).decode()},
        ),
    )

    # without the namespace's grant the operator may not read it, and says what to grant
    e2e_sgc.create(ns, secret_call("ungranted"))

    def refused() -> dict[str, Any] | None:
        c = condition(e2e_sgc.get(ns, "ungranted"), "Ready")
        return c if c.get("reason") == "PermissionDenied" else None

    c = wait_for(refused, timeout=60, what="Ready=False PermissionDenied")
    assert c["status"] == "False"
    assert "spec.target.body.fromSecret" in c["message"]
    assert "RoleBinding" in c["message"]

    # the documented grant: get on that one Secret, bound to the operator's ServiceAccount
    e2e_controlplane.kubectl(
        "-n",
        ns,
        "create",
        "role",
        "gcpcall-read-body",
        "--verb=get",
        "--resource=secrets",
        "--resource-name=payload",
    )
    e2e_controlplane.kubectl(
        "-n",
        ns,
        "create",
        "rolebinding",
        "gcpcall-read-body",
        "--role=gcpcall-read-body",
        f"--serviceaccount={OPERATOR_NS}:{OPERATOR_SA}",
    )
    e2e_sgc.create(ns, secret_call("granted"))
    obj = ready(e2e_sgc, ns, "granted", e2e_operator)
    job = e2e_emulator.scheduler().get_job(name=obj["status"]["jobName"])
    assert job.http_target.body == secret_body
    # and the refused one converges by itself once granted (retried with backoff)
    ready(e2e_sgc, ns, "ungranted", e2e_operator)


# --- and it may do nothing else ------------------------------------------------------------


def rules(install: Install) -> list[dict[str, Any]]:
    return list(install.cluster_role["rules"])


def test_cluster_role_has_no_wildcards_and_no_secrets(install: Install) -> None:
    for rule in rules(install):
        for key in ("verbs", "resources", "apiGroups", "resourceNames"):
            assert "*" not in rule.get(key, []), f"wildcard in {key}: {rule}"
        assert "secrets" not in rule["resources"], rule
        if "delete" in rule["verbs"]:  # only ttlSecondsAfterFinished's, on GcpTasks only
            assert rule == {"apiGroups": ["gcpcall.dev"], "resources": ["gcptasks"],
                            "verbs": ["delete"]}, rule
            continue
        assert not {
            "deletecollection",
            "update",
            "escalate",
            "bind",
            "impersonate",
        } & set(rule["verbs"]), rule
    assert not any(r.get("nonResourceURLs") for r in rules(install))


def granted(install: Install) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in rules(install)
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_cluster_role_is_exactly_what_the_operator_uses_in_workload_identity_mode(
    install: Install,
) -> None:
    # each line is used by a story of this suite (kopf's scans and watches, the reconcile,
    # the status sync, events, namespace defaults, WorkloadIdentity, ConfigMap bodies)
    assert granted(install) == BASE_RULES | {SA_GET, TOKEN}


ALLOWED = [
    ("list", "scheduledgcpcalls.gcpcall.dev", "--all-namespaces"),
    ("watch", "gcptasks.gcpcall.dev", "--all-namespaces"),
    ("patch", "scheduledgcpcalls.gcpcall.dev", "-n", "team-a"),
    ("get", "gcptasks.gcpcall.dev", "-n", "team-a"),
    ("delete", "gcptasks.gcpcall.dev", "-n", "team-a"),
    ("patch", "scheduledgcpcalls.gcpcall.dev", "--subresource=status", "-n", "team-a"),
    ("create", "events", "-n", "team-a"),
    ("get", "namespaces"),
    ("get", "serviceaccounts", "-n", "team-a"),
    ("create", "serviceaccounts", "--subresource=token", "-n", "team-a"),
    ("get", "configmaps", "-n", "team-a"),
    ("list", "customresourcedefinitions.apiextensions.k8s.io"),
    # leader election (two replicas): the one Lease, in the release namespace
    ("create", "leases.coordination.k8s.io", "-n", OPERATOR_NS),
    ("get", f"leases.coordination.k8s.io/{RELEASE}", "-n", OPERATOR_NS),
    ("update", f"leases.coordination.k8s.io/{RELEASE}", "-n", OPERATOR_NS),
]
DENIED = [
    ("get", "secrets", "-n", "team-a"),
    ("get", "secrets", "-n", OPERATOR_NS),
    ("list", "secrets", "--all-namespaces"),
    ("watch", "secrets", "--all-namespaces"),
    ("list", "configmaps", "--all-namespaces"),
    ("list", "serviceaccounts", "--all-namespaces"),
    ("create", "serviceaccounts", "-n", "team-a"),
    ("delete", "namespaces"),
    ("create", "namespaces"),
    ("list", "namespaces"),
    ("create", "scheduledgcpcalls.gcpcall.dev", "-n", "team-a"),
    ("update", "scheduledgcpcalls.gcpcall.dev", "-n", "team-a"),
    ("delete", "scheduledgcpcalls.gcpcall.dev", "-n", "team-a"),
    ("create", "customresourcedefinitions.apiextensions.k8s.io"),
    ("patch", "customresourcedefinitions.apiextensions.k8s.io"),
    ("create", "pods", "-n", "team-a"),
    ("create", "pods", "--subresource=exec", "-n", "team-a"),
    ("list", "pods", "--all-namespaces"),
    ("get", "nodes"),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
    ("escalate", "clusterroles.rbac.authorization.k8s.io"),
    ("impersonate", "serviceaccounts", "-n", "team-a"),
    ("delete", "events", "-n", "team-a"),
    ("create", "leases.coordination.k8s.io", "-n", "team-a"),
    ("update", "leases.coordination.k8s.io/another-lease", "-n", OPERATOR_NS),
    ("delete", f"leases.coordination.k8s.io/{RELEASE}", "-n", OPERATOR_NS),
    ("list", "leases.coordination.k8s.io", "--all-namespaces"),
    ("create", "clusterkopfpeerings.kopf.dev"),
]


def can_i(install: Install, *args: str) -> bool:
    proc = sa_kubectl(install, "auth", "can-i", *args)
    answer = proc.stdout.strip()
    assert answer in ("yes", "no"), f"can-i {args}: {proc.stdout} {proc.stderr}"
    return answer == "yes"


def test_the_service_account_can_do_what_the_operator_needs(install: Install) -> None:
    refused = [a for a in ALLOWED if not can_i(install, *a)]
    assert not refused, f"the chart's ServiceAccount may not: {refused}"


def test_the_service_account_can_do_nothing_else(install: Install) -> None:
    allowed = [a for a in DENIED if can_i(install, *a)]
    assert not allowed, f"the chart's ServiceAccount may: {allowed}"


def test_kubectl_confirms_the_whole_rule_list(install: Install, e2e_namespace: str) -> None:
    # everything the token may do in a namespace, as the API server computes it
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectRulesReview",
        "spec": {"namespace": e2e_namespace},
    }
    proc = sa_kubectl(install, "create", "-o", "json", "-f", "-", input=yaml.safe_dump(review))
    assert proc.returncode == 0, proc.stderr
    doc = yaml.safe_load(proc.stdout)
    assert doc["status"].get("incomplete") is not True, doc["status"]
    resource_rules = doc["status"]["resourceRules"]
    effective = {
        (group, resource, verb)
        for rule in resource_rules
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for verb in rule.get("verbs", [])
    }
    # what every authenticated user may do (reviews of its own access), and the chart's role
    self_review = {
        g_r_v
        for g_r_v in effective
        if g_r_v[0] == "authorization.k8s.io" or g_r_v[0] == "authentication.k8s.io"
    }
    assert {v for _, _, v in self_review} == {"create"}
    assert effective - self_review == granted(install)
    assert SA_USER.endswith(f":{OPERATOR_SA}")


def test_operator_log_has_no_permission_errors(e2e_operator: Operator) -> None:
    # kopf degrades quietly without CRD or namespace watch permissions: make sure it did not
    wait_for(
        lambda: "gcpcall-operator started" in e2e_operator.log(),
        timeout=60,
        what="the operator started",
    )
    log = e2e_operator.log()
    for sign in ("Not enough permissions", "403 Forbidden", "forbidden"):
        assert sign not in log, f"{sign!r} in the operator log:\n{log[-4000:]}"


def test_two_replicas_one_leads_and_the_other_stands_by(
    e2e_replicas: tuple[Operator, Operator], e2e_k8s: k8s_client.ApiClient,
    e2e_emulator: Emulator, e2e_sgc: Objects, e2e_namespace: str,
) -> None:
    leader, standby = e2e_replicas
    lease = k8s_client.CoordinationV1Api(e2e_k8s).read_namespaced_lease(RELEASE, OPERATOR_NS)
    assert lease.spec is not None
    assert str(lease.spec.holder_identity).startswith("e2e-operator-0_")
    assert lease.spec.lease_duration_seconds == 15
    bind_workload_identity(e2e_k8s, e2e_emulator, e2e_namespace, DEFAULT_KSA, gsa("runner"))
    e2e_sgc.create(e2e_namespace, sample_call("while-two-run", {"json": {"size": 2}}))
    ready(e2e_sgc, e2e_namespace, "while-two-run", leader)
    log = standby.log()
    assert "waiting for the lease" in log
    assert "this replica leads" not in log  # it made no call and no write
    assert "gcpcall-operator started" not in log
    for sign in ("Not enough permissions", "403 Forbidden", "forbidden", "Traceback"):
        assert sign not in log, f"{sign!r} in the standby's log:\n{log[-4000:]}"
