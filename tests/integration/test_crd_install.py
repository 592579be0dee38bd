"""The CRDs install on the real API server and store what users write, unchanged.

Why: api.md is a contract with users and with Argo CD. The server must know both kinds by
the names api.md gives, accept every documented field, inject no defaults (Argo CD would
show a permanent diff), keep status apart from spec (the status subresource), and store a
status that carries every field the operator is meant to write (anything else is pruned).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s_client

GROUP = "gcpcall.dev"
VERSION = "v1alpha1"
SAMPLES = Path(__file__).parent / "samples"
PLURALS = {"ScheduledGcpCall": "scheduledgcpcalls", "GcpTask": "gcptasks"}


def sample(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((SAMPLES / name).read_text())
    return loaded


def create(k8s: k8s_client.ApiClient, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
    api = k8s_client.CustomObjectsApi(k8s)
    created: dict[str, Any] = api.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURALS[obj["kind"]], copy.deepcopy(obj)
    )
    return created


def get(k8s: k8s_client.ApiClient, namespace: str, kind: str, name: str) -> dict[str, Any]:
    api = k8s_client.CustomObjectsApi(k8s)
    got: dict[str, Any] = api.get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURALS[kind], name
    )
    return got


@pytest.mark.parametrize(
    ("crd_name", "kind", "plural", "short_name"),
    [
        ("scheduledgcpcalls.gcpcall.dev", "ScheduledGcpCall", "scheduledgcpcalls", "sgc"),
        ("gcptasks.gcpcall.dev", "GcpTask", "gcptasks", "gtask"),
    ],
)
def test_crd_is_established_with_the_names_of_api_md(
    k8s: k8s_client.ApiClient, crd_name: str, kind: str, plural: str, short_name: str
) -> None:
    crd = k8s_client.ApiextensionsV1Api(k8s).read_custom_resource_definition(crd_name)

    conditions = {c.type: c.status for c in crd.status.conditions}
    assert conditions["Established"] == "True"
    assert conditions["NamesAccepted"] == "True"
    assert crd.spec.group == GROUP
    assert crd.spec.scope == "Namespaced"
    assert crd.spec.names.kind == kind
    assert crd.spec.names.plural == plural
    assert crd.spec.names.short_names == [short_name]
    assert crd.spec.names.categories == ["gcp", "gcpcall"]
    [version] = crd.spec.versions
    assert (version.name, version.served, version.storage) == (VERSION, True, True)
    assert version.subresources.status == {}


@pytest.mark.parametrize(
    "sample_file",
    [
        "scheduledgcpcall-full.yaml",
        "scheduledgcpcall-oidc.yaml",
        "gcptask-full.yaml",
        "gcptask-delay.yaml",
    ],
)
def test_sample_is_accepted_and_reads_back_unchanged(
    k8s: k8s_client.ApiClient, controlplane: Any, namespace: str, sample_file: str
) -> None:
    obj = sample(sample_file)

    create(k8s, namespace, obj)
    stored = get(k8s, namespace, obj["kind"], obj["metadata"]["name"])

    assert stored["spec"] == obj["spec"]
    assert "status" not in stored
    # What Argo CD does: a server-side dry run of the same file differs in nothing.
    diff = controlplane.kubectl(
        "diff", "-n", namespace, "-f", str(SAMPLES / sample_file), check=False
    )
    assert diff.returncode == 0, diff.stdout + diff.stderr


def test_categories_list_both_kinds(
    k8s: k8s_client.ApiClient, controlplane: Any, namespace: str
) -> None:
    create(k8s, namespace, sample("scheduledgcpcall-oidc.yaml"))
    create(k8s, namespace, sample("gcptask-delay.yaml"))

    for category in ("gcp", "gcpcall"):
        out = controlplane.kubectl("get", category, "-n", namespace, "-o", "name").stdout
        assert sorted(out.split()) == [
            "gcptask.gcpcall.dev/rotate-webhook",
            "scheduledgcpcall.gcpcall.dev/nightly-report",
        ]


RUN = {
    "scheduleTime": "2026-11-22T09:05:00Z",
    "attemptTime": "2026-11-22T09:05:01Z",
    "finishTime": "2026-11-22T09:07:30Z",
    "result": "Failed",
    "code": 0,
    "httpStatus": 200,
    "message": "operation failed: QUOTA_EXCEEDED",
    "operation": {
        "name": "projects/p/zones/z/operations/123",
        "done": True,
        "error": {"code": 8, "message": "Quota CPUS exceeded"},
        "response": {"kind": "compute#operation", "status": "DONE", "progress": 100},
    },
}

SGC_STATUS = {
    "observedGeneration": 1,
    "conditions": [
        {
            "type": "Ready",
            "status": "True",
            "reason": "UpToDate",
            "message": "",
            "lastTransitionTime": "2026-11-22T09:00:00Z",
            "observedGeneration": 1,
        },
        {
            "type": "LastRunSucceeded",
            "status": "False",
            "reason": "OperationFailed",
            "message": "operation failed: QUOTA_EXCEEDED",
            "lastTransitionTime": "2026-11-22T09:07:30Z",
            "observedGeneration": 1,
        },
    ],
    "jobName": "projects/my-project/locations/us-central1/jobs/c1_ns_scale-up-mig",
    "state": "ENABLED",
    "nextRunTime": "2026-11-22T10:05:00Z",
    "lastRunRequest": "2026-11-22T09:58:00Z",
    "identity": {
        "serviceAccountName": "scheduler-runner",
        "googleServiceAccount": "runner@p.iam.gserviceaccount.com",
    },
    "lastRun": RUN,
    "runs": [
        RUN,
        {
            "scheduleTime": "2026-11-22T08:05:00Z",
            "attemptTime": "2026-11-22T08:05:02Z",
            "result": "Succeeded",
            "code": 0,
            "httpStatus": 200,
        },
    ],
}

TASK_STATUS = {
    "observedGeneration": 1,
    "phase": "Failed",
    "conditions": [
        {
            "type": "Ready",
            "status": "True",
            "reason": "Created",
            "message": "",
            "lastTransitionTime": "2026-11-22T11:00:00Z",
            "observedGeneration": 1,
        },
        {
            "type": "Succeeded",
            "status": "False",
            "reason": "TargetError",
            "message": "HTTP 503 from dataflow.googleapis.com",
            "lastTransitionTime": "2026-11-22T12:03:00Z",
        },
    ],
    "taskName": "projects/my-project/locations/us-central1/queues/etl/tasks/0a1b2c-ns-x",
    "scheduleTime": "2026-11-22T12:00:00Z",
    "dispatchCount": 2,
    "responseCount": 1,
    "firstAttemptTime": "2026-11-22T12:00:01Z",
    "lastAttempt": {
        "attemptTime": "2026-11-22T12:02:00Z",
        "code": 14,
        "httpStatus": 503,
        "message": "Service Unavailable",
    },
    "completionTime": "2026-11-22T12:03:00Z",
    "identity": {"googleServiceAccount": "etl@p.iam.gserviceaccount.com"},
    "operation": RUN["operation"],
}


@pytest.mark.parametrize(
    ("sample_file", "status"),
    [("scheduledgcpcall-full.yaml", SGC_STATUS), ("gcptask-full.yaml", TASK_STATUS)],
    ids=["ScheduledGcpCall", "GcpTask"],
)
def test_status_subresource_keeps_generation_and_every_status_field(
    k8s: k8s_client.ApiClient, namespace: str, sample_file: str, status: dict[str, Any]
) -> None:
    api = k8s_client.CustomObjectsApi(k8s)
    obj = sample(sample_file)
    name = obj["metadata"]["name"]
    plural = PLURALS[obj["kind"]]
    created = create(k8s, namespace, obj)
    assert created["metadata"]["generation"] == 1

    patched = api.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, plural, name, {"status": status}
    )

    assert patched["metadata"]["generation"] == 1
    assert patched["status"] == status  # nothing pruned: the schema has every field
    assert patched["spec"] == obj["spec"]


def test_spec_patch_bumps_generation_and_status_via_main_resource_is_ignored(
    k8s: k8s_client.ApiClient, namespace: str
) -> None:
    api = k8s_client.CustomObjectsApi(k8s)
    create(k8s, namespace, sample("scheduledgcpcall-oidc.yaml"))

    patched = api.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "scheduledgcpcalls",
        "nightly-report",
        {"spec": {"paused": True}, "status": {"state": "PAUSED"}},
    )

    assert patched["metadata"]["generation"] == 2
    assert patched["spec"]["paused"] is True
    assert "status" not in patched

    after_status = api.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        namespace,
        "scheduledgcpcalls",
        "nightly-report",
        {"status": {"observedGeneration": 2, "state": "PAUSED"}},
    )

    assert after_status["metadata"]["generation"] == 2
    assert after_status["status"] == {"observedGeneration": 2, "state": "PAUSED"}


def test_status_schema_refuses_what_the_operator_must_not_write(
    k8s: k8s_client.ApiClient, namespace: str
) -> None:
    # A condition without reason, or a phase outside the list, is a bug in the operator;
    # the server catches it instead of storing it.
    api = k8s_client.CustomObjectsApi(k8s)
    create(k8s, namespace, sample("gcptask-delay.yaml"))

    with pytest.raises(k8s_client.ApiException) as bad_phase:
        api.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            namespace,
            "gcptasks",
            "rotate-webhook",
            {"status": {"phase": "Done"}},
        )
    with pytest.raises(k8s_client.ApiException) as bad_condition:
        api.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            namespace,
            "gcptasks",
            "rotate-webhook",
            {"status": {"conditions": [{"type": "Ready", "status": "True"}]}},
        )

    assert bad_phase.value.status == 422
    assert "status.phase" in str(bad_phase.value.body)
    assert bad_condition.value.status == 422
    assert "status.conditions[0].reason" in str(bad_condition.value.body)
