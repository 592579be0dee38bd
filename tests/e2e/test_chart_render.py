"""The chart as `helm lint` and `helm template` see it: every value does what values.yaml says,
bad values are refused, and every rendered object is valid for the real API server.

Why here and not in unit/: these tests run the helm binary (`make tools`).
"""

from __future__ import annotations

import copy
import json
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
from tests.unit.test_dashboard import DASHBOARD

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


def deployment(docs: list[dict[str, Any]], name: str = FULL_NAME) -> dict[str, Any]:
    found = [d for d in of_kind(docs, "Deployment") if d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one Deployment {name}, got {len(found)}"
    return found[0]


def container(docs: list[dict[str, Any]], name: str = FULL_NAME) -> dict[str, Any]:
    """The first container of the Deployment `name` (default: the operator's)."""
    return dict(deployment(docs, name)["spec"]["template"]["spec"]["containers"][0])


def env_of(docs: list[dict[str, Any]], name: str = FULL_NAME) -> dict[str, str]:
    return {e["name"]: str(e["value"]) for e in container(docs, name).get("env", [])}


def named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in of_kind(docs, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, got {len(found)}"
    return found[0]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# --- lint ----------------------------------------------------------------------------------


def test_helm_lint_strict_with_the_defaults(helm: Helm) -> None:
    proc = helm.lint()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("relay", ["in-process", "deployment"])
def test_helm_lint_strict_with_every_feature_on(helm: Helm, relay: str) -> None:
    proc = helm.lint(everything_on() if relay == "in-process" else everything_on_relay_apart())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[WARNING]" not in proc.stdout, proc.stdout


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
        "GCPCALL_LOG_FORMAT": "json",
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
            logFormat="text",
        )
    )
    env = container_env(docs)
    assert env["GCPCALL_LOG_FORMAT"] == "text"
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


RELAY_URL = "https://relay.example.com/gcpcall/v1"


def everything_on_relay_apart() -> dict[str, Any]:
    """Every option on, the relay as its own Deployment behind a Gateway."""
    out = everything_on()
    out["relay"] = {
        "enabled": True,
        "url": RELAY_URL,
        "oidc": {"certsUrl": "https://certs.example.com/oauth2/v1/certs",
                 "issuer": "https://accounts.example.com"},
        "deployment": {
            "enabled": True,
            "replicas": 3,
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
            "nodeSelector": {"pool": "relay"},
        },
        "httpRoute": {
            "enabled": True,
            "parentRefs": [{"name": "external", "namespace": "gateways", "sectionName": "https"}],
            "annotations": {"example.com/owner": "platform"},
            "labels": {"gateway": "external"},
        },
    }
    out["networkPolicy"]["relayFrom"] = [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gateways"}}}]
    out["metrics"]["prometheusRule"] = {"enabled": True, "labels": {"release": "prom"},
                                        "additionalLabels": {"team": "platform"}}
    out["metrics"]["dashboard"] = {"enabled": True}
    return out


def test_more_than_one_replica_elects_a_leader_on_a_lease(helm: Helm) -> None:
    docs = helm.template(values(replicaCount=2))
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert "strategy" not in deployment["spec"]  # a rolling update: the new pod stands by
    env = env_of(docs)
    assert env["GCPCALL_LEADER_ELECTION"] == "true"
    assert env["GCPCALL_LEASE_NAME"] == FULL_NAME
    assert env["GCPCALL_LEASE_NAMESPACE"] == OPERATOR_NS
    assert (env["GCPCALL_LEASE_DURATION_SECONDS"], env["GCPCALL_LEASE_RENEW_SECONDS"],
            env["GCPCALL_LEASE_RETRY_SECONDS"]) == ("15", "10", "2")  # client-go's defaults
    # the Lease only, in the release namespace only: a Role, nothing cluster-wide
    role = one(docs, "Role")
    assert role["metadata"]["namespace"] == OPERATOR_NS
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
         "resourceNames": [FULL_NAME], "verbs": ["get", "update"]},
    ]
    binding = one(docs, "RoleBinding")
    assert binding["metadata"]["namespace"] == OPERATOR_NS
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert not {r for r in rules(docs) if r[0] in ("coordination.k8s.io", "kopf.dev")}
    # kopf peering is gone
    assert not of_kind(docs, "ClusterKopfPeering")
    assert not [c for c in of_kind(docs, "CustomResourceDefinition")
                if c["metadata"]["name"].endswith("kopf.dev")]
    assert not [a for a in container(docs)["args"] if a.startswith("--peering")]
    # the settings pass through; one replica: no election, no Role, one pod at a time
    docs = helm.template(values(replicaCount=3, leaderElection={
        "leaseDurationSeconds": 30, "renewDeadlineSeconds": 20, "retryPeriodSeconds": 4}))
    assert env_of(docs)["GCPCALL_LEASE_DURATION_SECONDS"] == "30"
    one_replica = helm.template(values())
    assert "GCPCALL_LEADER_ELECTION" not in env_of(one_replica)
    assert not of_kind(one_replica, "Role")
    assert one(one_replica, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}
    # with one replica on request (e.g. before scaling up), and with watched namespaces
    docs = helm.template(values(leaderElection={"enabled": True}, watchNamespaces=["a"]))
    assert env_of(docs)["GCPCALL_LEADER_ELECTION"] == "true"
    assert one(docs, "Role")


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


# --- the relay -----------------------------------------------------------------------------

RELAY = f"{FULL_NAME}-relay"


def relay_values(**overrides: Any) -> dict[str, Any]:
    return values(relay__enabled=True, relay__url=RELAY_URL, **overrides)


def test_the_relay_runs_in_the_operator_pod_by_default(helm: Helm) -> None:
    docs = helm.template(relay_values())
    assert [d["metadata"]["name"] for d in of_kind(docs, "Deployment")] == [FULL_NAME]
    env = env_of(docs)
    assert env["GCPCALL_RELAY_URL"] == RELAY_URL
    assert env["GCPCALL_RELAY_PORT"] == "8443"
    assert not {"GCPCALL_RELAY_ADDRESS", "GCPCALL_OIDC_CERTS_URL", "GCPCALL_OIDC_ISSUER"} & set(env)
    assert {"name": "relay", "containerPort": 8443, "protocol": "TCP"} in container(docs)["ports"]
    pod_labels = deployment(docs)["spec"]["template"]["metadata"]["labels"]
    assert pod_labels["app.kubernetes.io/component"] == "operator"
    service = named(docs, "Service", RELAY)
    assert selects(service["spec"]["selector"], pod_labels)
    assert service["spec"]["ports"] == [
        {"name": "relay", "port": 80, "targetPort": "relay", "protocol": "TCP"}]
    assert not of_kind(docs, "PodDisruptionBudget")
    assert not of_kind(docs, "HTTPRoute")
    # the relay's other settings, when given
    docs = helm.template(relay_values(relay__address="127.0.0.1", relay__port=9443, relay__oidc={
        "certsUrl": "https://certs.example.com/c", "issuer": "https://issuer.example.com"}))
    env = env_of(docs)
    assert env["GCPCALL_RELAY_PORT"] == "9443"
    assert env["GCPCALL_RELAY_ADDRESS"] == "127.0.0.1"
    assert env["GCPCALL_OIDC_CERTS_URL"] == "https://certs.example.com/c"
    assert env["GCPCALL_OIDC_ISSUER"] == "https://issuer.example.com"


def test_the_relay_as_its_own_deployment(helm: Helm) -> None:
    docs = helm.template(everything_on_relay_apart())
    operator, relay = deployment(docs), deployment(docs, RELAY)
    # the operator serves no relay, but points Relay jobs and tasks at its URL
    op_env = env_of(docs)
    assert op_env["GCPCALL_RELAY_URL"] == RELAY_URL
    assert op_env["GCPCALL_RELAY_PORT"] == "0"
    assert "GCPCALL_OIDC_CERTS_URL" not in op_env
    assert "relay" not in {p["name"] for p in container(docs)["ports"]}

    # the same image as `gcpcall-operator relay`, with the operator's settings
    assert relay["spec"]["replicas"] == 3
    c = container(docs, RELAY)
    assert c["image"] == container(docs)["image"]
    assert c["command"] == ["gcpcall-operator"]
    assert c["args"] == ["relay", "--metrics-port=9090"]
    relay_env = env_of(docs, RELAY)
    assert relay_env["GCPCALL_RELAY_PORT"] == "8443"
    assert relay_env["GCPCALL_OIDC_CERTS_URL"] == "https://certs.example.com/oauth2/v1/certs"
    assert relay_env["GCPCALL_OIDC_ISSUER"] == "https://accounts.example.com"
    shared = {k: v for k, v in relay_env.items()
              if k not in ("GCPCALL_RELAY_PORT", "GCPCALL_OIDC_CERTS_URL", "GCPCALL_OIDC_ISSUER")}
    # the same settings, less the operator's own leader election (every relay replica serves)
    assert shared == {k: v for k, v in op_env.items() if k != "GCPCALL_RELAY_PORT"
                      and not k.startswith(("GCPCALL_LEADER_", "GCPCALL_LEASE_"))}
    assert {"GCPCALL_IDENTITY_MODE", "GCPCALL_CLUSTER_NAME", "GCPCALL_PROJECT",
            "GCPCALL_LOCATION", "GCPCALL_WORKLOAD_POOL", "GCPCALL_CLUSTER_URL"} <= set(shared)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"relay": 8443, "metrics": 9090}
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "relay"}

    # hardened like the operator, under its ServiceAccount
    op_pod, relay_pod = (d["spec"]["template"]["spec"] for d in (operator, relay))
    assert relay_pod["serviceAccountName"] == op_pod["serviceAccountName"] == FULL_NAME
    assert relay_pod["securityContext"] == op_pod["securityContext"]
    assert c["securityContext"] == container(docs)["securityContext"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert relay_pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]  # noqa: S108
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "16Mi"}} in relay_pod["volumes"]
    # its own resources and nodeSelector; the operator's tolerations and affinity
    assert c["resources"] == {"requests": {"cpu": "100m", "memory": "128Mi"}}
    assert relay_pod["nodeSelector"] == {"pool": "relay"}
    assert relay_pod["tolerations"] == op_pod["tolerations"]
    assert relay_pod["affinity"] == op_pod["affinity"]
    assert relay_pod["priorityClassName"] == op_pod["priorityClassName"]

    # the two Deployments' pods are told apart by app.kubernetes.io/component
    op_labels = operator["spec"]["template"]["metadata"]["labels"]
    relay_labels = relay["spec"]["template"]["metadata"]["labels"]
    assert op_labels["app.kubernetes.io/component"] == "operator"
    assert relay_labels["app.kubernetes.io/component"] == "relay"
    assert selects(relay["spec"]["selector"]["matchLabels"], relay_labels)
    assert not selects(relay["spec"]["selector"]["matchLabels"], op_labels)
    assert not selects(operator["spec"]["selector"]["matchLabels"], relay_labels)

    # the relay Service selects the relay's pods; each has its metrics Service
    services = {s["metadata"]["name"]: s for s in of_kind(docs, "Service")}
    assert set(services) == {RELAY, f"{FULL_NAME}-metrics", f"{RELAY}-metrics"}
    assert selects(services[RELAY]["spec"]["selector"], relay_labels)
    assert not selects(services[RELAY]["spec"]["selector"], op_labels)
    assert selects(services[f"{FULL_NAME}-metrics"]["spec"]["selector"], op_labels)
    assert not selects(services[f"{FULL_NAME}-metrics"]["spec"]["selector"], relay_labels)
    assert selects(services[f"{RELAY}-metrics"]["spec"]["selector"], relay_labels)
    monitor = one(docs, "ServiceMonitor")["spec"]
    for name in (f"{FULL_NAME}-metrics", f"{RELAY}-metrics"):
        labels = services[name]["metadata"]["labels"]
        assert selects(monitor["selector"]["matchLabels"], labels)
        assert labels["app.kubernetes.io/component"] in monitor["selector"][
            "matchExpressions"][0]["values"]
    assert monitor["endpoints"][0]["honorLabels"] is True

    # a PodDisruptionBudget for each: the operator's (podDisruptionBudget.enabled) and the
    # relay's (more than one replica)
    budgets = {b["metadata"]["name"]: b["spec"] for b in of_kind(docs, "PodDisruptionBudget")}
    assert set(budgets) == {FULL_NAME, RELAY}
    assert budgets[RELAY]["maxUnavailable"] == 1
    assert selects(budgets[RELAY]["selector"]["matchLabels"], relay_labels)
    assert not selects(budgets[RELAY]["selector"]["matchLabels"], op_labels)
    assert not selects(budgets[FULL_NAME]["selector"]["matchLabels"], relay_labels)


def test_one_relay_replica_has_no_disruption_budget(helm: Helm) -> None:
    docs = helm.template(relay_values(relay__deployment={"enabled": True, "replicas": 1}))
    assert deployment(docs, RELAY)["spec"]["replicas"] == 1
    assert not of_kind(docs, "PodDisruptionBudget")
    # defaults: two replicas, the operator's resources
    docs = helm.template(relay_values(relay__deployment={"enabled": True}))
    assert deployment(docs, RELAY)["spec"]["replicas"] == 2
    assert named(docs, "PodDisruptionBudget", RELAY)["spec"]["maxUnavailable"] == 1
    assert container(docs, RELAY)["resources"] == container(docs)["resources"]
    # the Deployment alone does nothing without the relay
    docs = helm.template(values(relay__deployment={"enabled": True}))
    assert [d["metadata"]["name"] for d in of_kind(docs, "Deployment")] == [FULL_NAME]
    assert "GCPCALL_RELAY_PORT" not in env_of(docs)


def test_network_policies_of_the_relay_pods(helm: Helm) -> None:
    docs = helm.template(everything_on_relay_apart())
    policies = {p["metadata"]["name"]: p["spec"] for p in of_kind(docs, "NetworkPolicy")}
    assert set(policies) == {FULL_NAME, RELAY}
    relay_labels = deployment(docs, RELAY)["spec"]["template"]["metadata"]["labels"]
    op_labels = deployment(docs)["spec"]["template"]["metadata"]["labels"]
    assert selects(policies[RELAY]["podSelector"]["matchLabels"], relay_labels)
    assert not selects(policies[FULL_NAME]["podSelector"]["matchLabels"], relay_labels)
    assert selects(policies[FULL_NAME]["podSelector"]["matchLabels"], op_labels)
    rules = {r["ports"][0]["port"]: r.get("from") for r in policies[RELAY]["ingress"]}
    assert rules == {
        "relay": [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": "gateways"}}}],
        "metrics": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}],
    }
    assert policies[RELAY]["egress"] == policies[FULL_NAME]["egress"]
    # the operator's pod serves no relay port any more
    assert [r["ports"][0]["port"] for r in policies[FULL_NAME]["ingress"]] == [
        "health", "metrics"]


def test_the_relay_behind_a_gateway(helm: Helm) -> None:
    docs = helm.template(everything_on_relay_apart())
    route = one(docs, "HTTPRoute")
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["metadata"]["name"] == RELAY
    assert route["metadata"]["annotations"] == {"example.com/owner": "platform"}
    assert route["metadata"]["labels"]["gateway"] == "external"
    spec = route["spec"]
    assert spec["parentRefs"] == [{"name": "external", "namespace": "gateways",
                                   "sectionName": "https"}]
    assert spec["hostnames"] == ["relay.example.com"]  # the host of relay.url
    assert spec["rules"] == [{
        "matches": [{"path": {"type": "PathPrefix", "value": "/gcpcall/v1"}}],
        "backendRefs": [{"name": RELAY, "port": 80}],
    }]
    service = named(docs, "Service", RELAY)
    assert service["spec"]["ports"][0]["port"] == 80
    # hostnames of its own, a port in the URL, no path
    docs = helm.template(values(
        relay__enabled=True, relay__url="https://relay.example.com:8443",
        relay__service={"port": 8080},
        relay__httpRoute={"enabled": True, "parentRefs": [{"name": "gw"}],
                          "hostnames": ["a.example.com", "b.example.com"]}))
    spec = one(docs, "HTTPRoute")["spec"]
    assert spec["hostnames"] == ["a.example.com", "b.example.com"]
    assert spec["rules"][0]["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]
    assert spec["rules"][0]["backendRefs"] == [{"name": RELAY, "port": 8080}]
    docs = helm.template(values(
        relay__enabled=True, relay__url="https://relay.example.com:8443/r",
        relay__httpRoute={"enabled": True, "parentRefs": [{"name": "gw"}]}))
    assert one(docs, "HTTPRoute")["spec"]["hostnames"] == ["relay.example.com"]
    # nothing without the relay
    docs = helm.template(values(relay__httpRoute={"enabled": True, "parentRefs": [{"name": "g"}]}))
    assert not of_kind(docs, "HTTPRoute")


# --- the dashboard ---------------------------------------------------------------------------


def test_the_dashboard_is_a_configmap_for_grafana_s_sidecar(helm: Helm) -> None:
    assert not of_kind(helm.template(values()), "ConfigMap")
    docs = helm.template(values(metrics__dashboard={"enabled": True}))
    cm = one(docs, "ConfigMap")
    assert cm["metadata"]["name"] == f"{FULL_NAME}-dashboard"
    assert cm["metadata"]["namespace"] == OPERATOR_NS
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    (key, text), = cm["data"].items()
    assert key.endswith(".json")
    assert json.loads(text) == json.loads(DASHBOARD.read_text())
    # the sidecar's label, its namespace and folder, as the Grafana install has them
    docs = helm.template(values(metrics__dashboard={
        "enabled": True, "labelKey": "grafana.com/dashboard", "labelValue": "gcpcall",
        "namespace": "monitoring", "labels": {"team": "platform"},
        "annotations": {"grafana_folder": "Operators"}}))
    meta = one(docs, "ConfigMap")["metadata"]
    assert meta["namespace"] == "monitoring"
    assert meta["labels"]["grafana.com/dashboard"] == "gcpcall"
    assert "grafana_dashboard" not in meta["labels"]
    assert meta["labels"]["team"] == "platform"
    assert meta["annotations"] == {"grafana_folder": "Operators"}


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

    assert "Relay" not in text
    relay = ("--set", "relay.enabled=true", "--set", f"relay.url={RELAY_URL}")
    text = notes(helm, e2e_controlplane, *relay)
    assert "DNS: relay.example.com resolves to" in text
    assert "spec: {domains: [relay.example.com]}" in text  # a GKE Google-managed certificate
    assert "It runs inside the operator's pod" in text
    assert "WARNING: neither relay.ingress.enabled nor relay.httpRoute.enabled" in text
    assert ("--member=\"serviceAccount:service-$PROJECT_NUMBER@gcp-sa-cloudscheduler"
            ".iam.gserviceaccount.com\"") in text
    assert "--role=roles/cloudscheduler.serviceAgent" in text
    assert ("--member=\"serviceAccount:service-$PROJECT_NUMBER@gcp-sa-cloudtasks"
            ".iam.gserviceaccount.com\"") in text
    assert "--role=roles/cloudtasks.serviceAgent" in text
    assert ("gcloud iam service-accounts add-iam-policy-binding $TOKEN_SA "
            "--member=\"serviceAccount:$GSA\" --role=roles/iam.serviceAccountTokenCreator") in text
    # (an HTTPRoute would count as well, but this API server serves no Gateway API)
    text = notes(helm, e2e_controlplane, *relay, "--set", "relay.deployment.enabled=true",
                 "--set", "relay.ingress.enabled=true")
    assert "deployment/notes-gcpcall-operator-relay (2 replicas)" in text
    assert "WARNING: neither" not in text


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
        ({"relay__enabled": True}, "/relay/url"),
        ({"relay__enabled": True, "relay__url": "http://insecure.example.com/r"}, "/relay/url"),
        ({"relay__url": "http://insecure.example.com"}, "/relay/url"),
        ({"relay__enabled": True, "relay__url": "https://"}, "/relay/url"),
        ({"relay__port": 0}, "/relay/port"),
        ({"relay__port": 65536}, "/relay/port"),
        ({"relay__deployment__replicas": "two"}, "/relay/deployment/replicas"),
        ({"relay__deployment__unknown": 1}, "unknown"),
        ({"relay__httpRoute__parentRefs": [{"namespace": "x"}]}, "/relay/httpRoute/parentRefs/0"),
        ({"relay__enabled": True, "relay__url": RELAY_URL, "relay__httpRoute__enabled": True},
         "relay.httpRoute.parentRefs is required"),
        ({"metrics__dashboard__labelKey": ""}, "/metrics/dashboard/labelKey"),
        ({"leaderElection": {"leaseDurationSeconds": 0}}, "/leaderElection/leaseDurationSeconds"),
        ({"peering": {"installCRD": True}}, "peering"),
        ({"logFormat": "xml"}, "/logFormat"),
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


# Kinds whose CRDs the e2e API server does not have (Prometheus Operator, Gateway API):
# rendered and checked above, not sent to the server.
NOT_SERVED = {"ServiceMonitor", "PrometheusRule", "HTTPRoute"}


@pytest.mark.parametrize("relay", ["in-process", "deployment"])
def test_every_rendered_object_is_valid_for_the_api_server(
    helm: Helm, e2e_controlplane: ControlPlane, relay: str
) -> None:
    """Server-side dry run with strict field validation (unknown fields refused)."""
    docs = helm.template(everything_on() if relay == "in-process" else everything_on_relay_apart())
    namespace = f"render-check-{relay}"
    e2e_controlplane.kubectl("create", "namespace", namespace)
    rest = [d for d in docs if d["kind"] not in NOT_SERVED]
    for d in rest:
        if "namespace" in d["metadata"]:
            d["metadata"]["namespace"] = namespace
    out = kubectl_apply(e2e_controlplane, rest, "--dry-run=server", "--validate=strict")
    assert out.count("serverside-applied (server dry run)") == len(rest), out
