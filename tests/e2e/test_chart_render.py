"""The chart as `helm lint` and `helm template` see it: every value does what values.yaml says,
bad values are refused, and every rendered object is valid for the real API server.

Why here and not in unit/: these tests run the helm binary (`make tools`).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from tests.conftest import CRDS, FINALIZER_POLICY, ControlPlane
from tests.e2e.conftest import (
    CHART,
    E2E_VALUES,
    OPERATOR_NS,
    RELEASE,
    Helm,
    container_env,
    kubectl_apply,
    of_kind,
    one,
)

FULL_NAME = RELEASE  # the release is named after the chart


def values(**overrides: Any) -> dict[str, Any]:
    out = copy.deepcopy(E2E_VALUES)
    for dotted, value in overrides.items():
        node = out
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return out


def rules(docs: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in one(docs, "ClusterRole")["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return dict(one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0])


# --- lint ----------------------------------------------------------------------------------


def test_helm_lint_strict_with_the_defaults(helm: Helm) -> None:
    proc = helm.lint()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


def test_helm_lint_strict_with_every_feature_on(helm: Helm) -> None:
    proc = helm.lint(everything_on())
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- CRDs ----------------------------------------------------------------------------------


def test_crds_are_the_repository_crds_with_the_chart_labels_and_keep(helm: Helm) -> None:
    crds = {
        d["metadata"]["name"]: d
        for d in of_kind(helm.template(values()), "CustomResourceDefinition")
    }
    canonical = {
        p.name.removesuffix(".yaml"): yaml.safe_load(p.read_text())
        for p in sorted(CRDS.glob("*.yaml"))
    }
    assert set(crds) == set(canonical)
    for name, crd in crds.items():
        meta = crd["metadata"]
        assert meta["annotations"] == {"helm.sh/resource-policy": "keep"}
        assert meta["labels"]["app.kubernetes.io/part-of"] == "gcpcall-operator"
        rendered = {**crd, "metadata": {"name": meta["name"]}}
        assert rendered == canonical[name], f"{name}: the rendered CRD differs from crds/"


def test_crds_keep_false_and_crds_disabled(helm: Helm) -> None:
    crds = of_kind(helm.template(values(crds__keep=False)), "CustomResourceDefinition")
    assert len(crds) == 2
    assert all("annotations" not in c["metadata"] for c in crds)
    assert not of_kind(helm.template(values(crds__enabled=False)), "CustomResourceDefinition")


def test_finalizer_policy_is_the_repository_policy_from_kubernetes_1_36(helm: Helm) -> None:
    mine = {d["kind"]: d for d in yaml.safe_load_all(FINALIZER_POLICY.read_text())}
    rendered = {d["kind"]: d for d in helm.template(values())
                if d["kind"].startswith("MutatingAdmissionPolicy")}
    assert set(rendered) == {"MutatingAdmissionPolicy", "MutatingAdmissionPolicyBinding"}
    policy = rendered["MutatingAdmissionPolicy"]
    assert policy["spec"] == mine["MutatingAdmissionPolicy"]["spec"]
    assert rendered["MutatingAdmissionPolicyBinding"]["spec"] == {
        "policyName": policy["metadata"]["name"]}
    assert policy["metadata"]["labels"]["app.kubernetes.io/name"] == "gcpcall-operator"
    # off by value, and not rendered for API servers that do not serve it
    assert not [d for d in helm.template(values(finalizerPolicy__enabled=False))
                if d["kind"].startswith("MutatingAdmissionPolicy")]
    with_values = helm._with_values(values(), "template", "x", str(CHART), "--kube-version",
                                    "1.35.2")
    assert with_values.returncode == 0, with_values.stderr
    assert "MutatingAdmissionPolicy" not in with_values.stdout


# --- RBAC per identity mode ----------------------------------------------------------------

BASE_RULES = {
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
    *{
        ("gcpcall.dev", kind, verb)
        for kind in ("scheduledgcpcalls", "gcptasks")
        for verb in ("get", "list", "watch", "patch")
    },
    ("gcpcall.dev", "gcptasks", "delete"),
    ("gcpcall.dev", "scheduledgcpcalls/status", "patch"),
    ("gcpcall.dev", "gcptasks/status", "patch"),
    ("", "events", "create"),
    ("", "namespaces", "get"),
    ("", "configmaps", "get"),
}
SA_GET = ("", "serviceaccounts", "get")
TOKEN = ("", "serviceaccounts/token", "create")


@pytest.mark.parametrize(
    ("mode", "identity_rules"),
    [
        ("WorkloadIdentity", {SA_GET, TOKEN}),
        ("Impersonation", {SA_GET}),
        ("Operator", set()),
    ],
)
def test_cluster_role_per_identity_mode(
    helm: Helm, mode: str, identity_rules: set[tuple[str, str, str]]
) -> None:
    docs = helm.template(values(identity__mode=mode))
    assert rules(docs) == BASE_RULES | identity_rules
    assert container_env(docs)["GCPCALL_IDENTITY_MODE"] == mode
    binding = one(docs, "ClusterRoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": FULL_NAME, "namespace": OPERATOR_NS}
    ]
    assert binding["roleRef"]["name"] == one(docs, "ClusterRole")["metadata"]["name"]


def test_configmaps_can_be_left_to_each_namespace(helm: Helm) -> None:
    docs = helm.template(values(rbac__configMapsClusterWide=False))
    assert rules(docs) == BASE_RULES - {("", "configmaps", "get")} | {SA_GET, TOKEN}


def test_watching_some_namespaces_lets_kopf_list_them(helm: Helm) -> None:
    docs = helm.template(values(watchNamespaces=["team-a", "team-b"]))
    assert {("", "namespaces", "list"), ("", "namespaces", "watch")} <= rules(docs)
    args = container(docs)["args"]
    assert "--namespace=team-a" in args
    assert "--namespace=team-b" in args


def test_rbac_and_service_account_can_be_brought_by_the_user(helm: Helm) -> None:
    docs = helm.template(
        values(rbac__create=False, serviceAccount__create=False, serviceAccount__name="mine")
    )
    assert not of_kind(docs, "ClusterRole")
    assert not of_kind(docs, "ServiceAccount")
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "mine"


# --- the Deployment ------------------------------------------------------------------------


def test_deployment_runs_hardened_with_the_settings_as_env(helm: Helm) -> None:
    docs = helm.template(
        values(
            serviceAccount__annotations={
                "iam.gke.io/gcp-service-account": "op@p.iam.gserviceaccount.com"
            }
        )
    )
    deployment = one(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container(docs)["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["runAsUser"] == 10001
    assert sc["runAsNonRoot"] is True
    tmp = {"name": "tmp", "mountPath": "/tmp"}  # noqa: S108 - an emptyDir in the pod
    assert tmp in container(docs)["volumeMounts"]
    assert container(docs)["image"] == "ghcr.io/gcpcall/gcpcall-operator:0.1.0"
    assert container(docs)["args"] == [
        "--liveness=http://0.0.0.0:8080/healthz",
        "--metrics-port=9090",
    ]
    probe = container(docs)["livenessProbe"]["httpGet"]
    assert probe == {"path": "/healthz", "port": "health"}
    assert container_env(docs) == {
        "GCPCALL_CLUSTER_NAME": "e2e",
        "GCPCALL_IDENTITY_MODE": "WorkloadIdentity",
        "GCPCALL_PROJECT": "e2e-project",
        "GCPCALL_LOCATION": "europe-west1",
        "GCPCALL_SERVICE_ACCOUNT": "gcpcall-runner",
        "GCPCALL_WORKLOAD_POOL": "e2e-project.svc.id.goog",
        "GCPCALL_CLUSTER_URL": E2E_VALUES["identity"]["clusterUrl"],
        "PYTHONUNBUFFERED": "1",
    }
    sa = one(docs, "ServiceAccount")
    assert sa["metadata"]["annotations"] == {
        "iam.gke.io/gcp-service-account": "op@p.iam.gserviceaccount.com"
    }
    assert pod["serviceAccountName"] == sa["metadata"]["name"] == FULL_NAME


def test_other_settings_reach_the_environment(helm: Helm) -> None:
    docs = helm.template(
        values(
            identity__mode="Impersonation",
            identity__impersonationDelegates=[
                "d1@p.iam.gserviceaccount.com",
                "d2@p.iam.gserviceaccount.com",
            ],
            identity__stsAudience="//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/k8s/providers/c",
            extraEnv=[{"name": "GCPCALL_DRIFT_CHECK_SECONDS", "value": "300"}],
            image__tag="1.2.3",
            verbose=True,
        )
    )
    env = container_env(docs)
    assert env["GCPCALL_IMPERSONATION_DELEGATES"] == (
        "d1@p.iam.gserviceaccount.com,d2@p.iam.gserviceaccount.com"
    )
    assert env["GCPCALL_STS_AUDIENCE"].startswith("//iam.googleapis.com/")
    assert env["GCPCALL_DRIFT_CHECK_SECONDS"] == "300"
    assert container(docs)["image"].endswith(":1.2.3")
    assert "--verbose" in container(docs)["args"]


# --- optional parts ------------------------------------------------------------------------


def everything_on() -> dict[str, Any]:
    return values(
        replicaCount=2,
        relay__enabled=True,
        relay__url="https://relay.example.com/gcpcall",
        relay__ingress={
            "enabled": True,
            "className": "nginx",
            "tls": [{"secretName": "relay-tls", "hosts": ["relay.example.com"]}],
        },
        metrics__serviceMonitor={"enabled": True, "labels": {"release": "prom"}},
        podDisruptionBudget={"enabled": True, "maxUnavailable": 1},
        networkPolicy={
            "enabled": True,
            "metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}],
            "egress": [{"ports": [{"port": 443, "protocol": "TCP"}]}],
        },
        nodeSelector={"kubernetes.io/os": "linux"},
        tolerations=[
            {"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule"}
        ],
        affinity={"nodeAffinity": {}},
        priorityClassName="system-cluster-critical",
    )


def test_more_than_one_replica_peers_with_kopf(helm: Helm) -> None:
    docs = helm.template(values(replicaCount=2))
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert "strategy" not in deployment["spec"]  # a rolling update is safe with peering
    assert f"--peering={FULL_NAME}" in container(docs)["args"]
    crd = [
        c
        for c in of_kind(docs, "CustomResourceDefinition")
        if c["metadata"]["name"] == "clusterkopfpeerings.kopf.dev"
    ]
    assert len(crd) == 1
    peering = one(docs, "ClusterKopfPeering")
    assert peering["metadata"]["name"] == FULL_NAME
    assert peering["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    assert {
        ("kopf.dev", "clusterkopfpeerings", "list"),
        ("kopf.dev", "clusterkopfpeerings", "watch"),
        ("kopf.dev", "clusterkopfpeerings", "get"),
        ("kopf.dev", "clusterkopfpeerings", "patch"),
    } <= rules(docs)
    named = [
        r
        for r in one(docs, "ClusterRole")["rules"]
        if "patch" in r["verbs"] and r["apiGroups"] == ["kopf.dev"]
    ]
    assert named
    assert all(r["resourceNames"] == [FULL_NAME] for r in named)
    # another kopf operator may have installed the peering CRD already
    docs = helm.template(values(replicaCount=2, peering={"installCRD": False}))
    assert len(of_kind(docs, "CustomResourceDefinition")) == 2
    # one replica: no peering at all
    assert not of_kind(helm.template(values()), "ClusterKopfPeering")


def test_relay_metrics_pdb_networkpolicy(helm: Helm) -> None:
    docs = everything_on_docs(helm)
    services = {s["metadata"]["name"]: s for s in of_kind(docs, "Service")}
    assert set(services) == {f"{FULL_NAME}-metrics", f"{FULL_NAME}-relay"}
    ingress = one(docs, "Ingress")
    rule = ingress["spec"]["rules"][0]
    assert rule["host"] == "relay.example.com"
    assert rule["http"]["paths"][0]["path"] == "/gcpcall"
    assert rule["http"]["paths"][0]["backend"]["service"]["name"] == f"{FULL_NAME}-relay"
    assert ingress["spec"]["ingressClassName"] == "nginx"
    env = container_env(docs)
    assert env["GCPCALL_RELAY_URL"] == "https://relay.example.com/gcpcall"
    assert env["GCPCALL_RELAY_PORT"] == "8443"
    ports = {p["name"]: p["containerPort"] for p in container(docs)["ports"]}
    assert ports == {"health": 8080, "metrics": 9090, "relay": 8443}
    monitor = one(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert one(docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    policy = one(docs, "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    ingress_ports = [p["port"] for r in policy["spec"]["ingress"] for p in r["ports"]]
    assert ingress_ports == ["health", "metrics", "relay"]
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["priorityClassName"] == "system-cluster-critical"


def everything_on_docs(helm: Helm) -> list[dict[str, Any]]:
    return helm.template(everything_on())


def test_defaults_render_nothing_optional(helm: Helm) -> None:
    kinds = sorted(d["kind"] for d in helm.template(values()))
    assert kinds == sorted(
        [
            "ServiceAccount",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "ClusterRole",
            "ClusterRoleBinding",
            "Service",
            "Deployment",
            "MutatingAdmissionPolicy",  # the finalizer at create, on Kubernetes 1.36+
            "MutatingAdmissionPolicyBinding",
        ]
    )


def notes(helm: Helm, cp: ControlPlane, *sets: str) -> str:
    # a release and namespace of its own, no CRDs: a dry-run install refuses to take over
    # the objects of the e2e install
    proc = helm.run(
        "install", "notes", str(CHART), "--dry-run=client", "-n", "notes-check",
        "--kubeconfig", cp.kubeconfig, "--set", "clusterName=e2e", "--set", "crds.enabled=false",
        *sets,
    )  # fmt: skip
    return proc.stdout.split("NOTES:", 1)[1]


def test_notes_say_what_to_do_next(helm: Helm, e2e_controlplane: ControlPlane) -> None:
    text = notes(helm, e2e_controlplane)
    assert "roles/iam.workloadIdentityUser" in text
    assert "roles/cloudscheduler.admin" in text
    assert "WARNING: set identity.workloadPool" in text  # no pool in these values
    assert "--resource=secrets --resource-name=SECRET" in text
    assert "--serviceaccount=notes-check:notes-gcpcall-operator" in text

    text = notes(helm, e2e_controlplane, "--set", "identity.mode=Impersonation")
    assert "roles/iam.serviceAccountTokenCreator" in text
    assert "WARNING" not in text
    assert "[notes-check/notes-gcpcall-operator]" in text


# --- refused values ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"clusterName": ""}, "clusterName is required"),
        ({"clusterName": "Not_Valid"}, "clusterName"),
        ({"identity__mode": "Root"}, "/identity/mode"),
        ({"securityContext__readOnlyRootFilesystem": False}, "readOnlyRootFilesystem"),
        ({"securityContext__capabilities": {"drop": ["NET_RAW"]}}, "capabilities"),
        ({"podSecurityContext__runAsNonRoot": False}, "runAsNonRoot"),
        ({"relay__enabled": True}, "relay.url is required"),
        ({"relay__url": "http://insecure.example.com"}, "/relay/url"),
        ({"replicaCount": 2, "watchNamespaces": ["a"]}, "only cluster-wide"),
        ({"unknownKey": 1}, "unknownKey"),
    ],
)
def test_bad_values_are_refused_with_a_message(
    helm: Helm, overrides: dict[str, Any], error: str
) -> None:
    proc = helm.render(values(**overrides))
    assert proc.returncode != 0
    assert error in proc.stderr, proc.stderr


# --- valid for the real API server ---------------------------------------------------------


def test_every_rendered_object_is_valid_for_the_api_server(
    helm: Helm, e2e_controlplane: ControlPlane
) -> None:
    """Server-side dry run with strict field validation (unknown fields refused)."""
    docs = everything_on_docs(helm)
    peering_crd = [
        d
        for d in docs
        if d["kind"] == "CustomResourceDefinition"
        and d["metadata"]["name"] == "clusterkopfpeerings.kopf.dev"
    ]
    kubectl_apply(e2e_controlplane, peering_crd)  # the hook object needs its kind served
    e2e_controlplane.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd/clusterkopfpeerings.kopf.dev"
    )
    e2e_controlplane.kubectl("create", "namespace", "render-check")
    rest = [d for d in docs if d["kind"] != "ServiceMonitor"]  # no Prometheus Operator here
    for d in rest:
        if "namespace" in d["metadata"]:
            d["metadata"]["namespace"] = "render-check"
    out = kubectl_apply(e2e_controlplane, rest, "--dry-run=server", "--validate=strict")
    assert out.count("serverside-applied (server dry run)") == len(rest), out
