"""GcpTasks that pass admission but can never work: `Ready=False, InvalidSpec`, no Google call.

Why: the CRD schema catches most mistakes at `kubectl apply`; what it cannot see (the
creation time against scheduleTime, the operator's own settings, a namespace's defaults,
the bytes of a ConfigMap body, the exact URL and header rules Google applies) the operator
must catch before its one CreateTask, name the field, and never call Cloud Tasks for it.
Each case changes one thing in a valid object, so the refusal is that change's.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from kubernetes import client as k8s_client
from tests.integration.conftest import (
    TARGET_HOST,
    Emulator,
    Objects,
    condition,
    events_for,
    wait_for,
)
from tests.integration.test_gcptask_lifecycle import (
    gone,
    later,
    sample,
    tasks_calls,
    wait_ready,
)

pytestmark = pytest.mark.usefixtures("operator")

Spec = dict[str, Any]
URI = f"https://{TARGET_HOST}/v1/launch"


@dataclass(frozen=True)
class Case:
    field: str  # the field the refusal must name
    change: Callable[[Spec], None]
    namespace_annotations: dict[str, str] = field(default_factory=dict)
    configmap: dict[str, str] | None = None  # data of ConfigMap "body" in the namespace


def setter(path: str, value: Any) -> Callable[[Spec], None]:
    def change(spec: Spec) -> None:
        *parents, last = path.split(".")
        node = spec
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value

    return change


def add_header(name: str, value: str) -> Callable[[Spec], None]:
    def change(spec: Spec) -> None:
        spec["target"]["headers"].append({"name": name, "value": value})

    return change


def many_headers(spec: Spec) -> None:
    spec["target"]["headers"].extend(
        {"name": f"X-Big-{i}", "value": "v" * 8000} for i in range(11))


def no_project(spec: Spec) -> None:
    spec.pop("project", None)


CASES: dict[str, Case] = {
    "schedule-time-in-the-past": Case("spec.scheduleTime", setter("scheduleTime", later(-60))),
    "schedule-time-31-days-ahead": Case(
        "spec.scheduleTime", setter("scheduleTime", later(31 * 86400))),
    "cloud-tasks-reserved-header": Case(
        "spec.target.headers[2].name", add_header("X-CloudTasks-TaskName", "mine")),
    "headers-over-80-kb": Case("spec.target.headers", many_headers),
    "header-value-with-a-control-character": Case(
        "spec.target.headers[2].value", add_header("X-Note", "a\x01b")),
    "uri-with-user-info": Case(
        "spec.target.uri", setter("target.uri", f"https://user:pw@{TARGET_HOST}/v1/x")),
    "uri-with-port-zero": Case(
        "spec.target.uri", setter("target.uri", f"https://{TARGET_HOST}:0/v1/x")),
    "uri-with-an-invalid-host-name": Case(
        "spec.target.uri", setter("target.uri", "https://bad_host.googleapis.com/v1/x")),
    "uri-with-non-ascii": Case(
        "spec.target.uri", setter("target.uri", f"https://{TARGET_HOST}/v1/caf\u00e9")),
    "oauth-scope-with-a-control-character": Case(
        "spec.target.auth.oauth.scope",
        setter("target.auth.oauth", {"scope": "https://www.googleapis.com/auth/x\ty"})),
    "oidc-audience-with-a-control-character": Case(
        "spec.target.auth.oidc.audience",
        setter("target.auth", {"oidc": {"audience": "aud\x01"},
                               "serviceAccountEmail": "runner@p.iam.gserviceaccount.com"})),
    "text-body-over-1-mb-with-uri-and-headers": Case(
        "spec.target.body", setter("target.body", {"text": "x" * 1048576})),
    "uri-with-a-backslash": Case(
        "spec.target.uri", setter("target.uri", f"https://{TARGET_HOST}/v1/a\\b")),
    "configmap-body-over-1-mb-with-uri-and-headers": Case(
        "spec.target.body.fromConfigMap",
        setter("target.body", {"fromConfigMap": {"name": "body", "key": "body.json"}}),
        configmap={"body.json": "y" * 1048500}),
    "namespace-project-annotation-invalid": Case(
        "spec.project", no_project,
        namespace_annotations={"gcpcall.dev/project": "Not_A_Project"}),
    "namespace-location-annotation-invalid": Case(
        "spec.location", no_project,
        namespace_annotations={"gcpcall.dev/location": "Europe"}),
}


def prepare(k8s: k8s_client.ApiClient, namespace: str, case: Case) -> None:
    core = k8s_client.CoreV1Api(k8s)
    if case.namespace_annotations:
        core.patch_namespace(namespace, {"metadata": {"annotations":
                                                      case.namespace_annotations}})
    if case.configmap is not None:
        core.create_namespaced_config_map(namespace, k8s_client.V1ConfigMap(
            metadata=k8s_client.V1ObjectMeta(name="body"), data=case.configmap))


def google_calls(emulator: Emulator) -> int:
    """The Cloud Tasks calls an invalid object could cause: its first would be CreateTask,
    and DeleteTask on deletion. (Other objects of the session poll and wait for queues
    meanwhile; those reads are not attributable in the emulator's call log.)"""
    return sum(len(tasks_calls(emulator, m)) for m in ("CreateTask", "DeleteTask"))


def test_there_are_at_least_fifteen_cases() -> None:
    assert len(CASES) >= 15


@pytest.mark.parametrize("case_id", list(CASES))
def test_invalid_object_is_reported_naming_the_field_without_a_google_call(
    case_id: str, gtask: Objects, namespace: str, emulator: Emulator,
) -> None:
    case = CASES[case_id]
    prepare(gtask.api.api_client, namespace, case)
    body = sample("bad", namespace, "/v1/launch", scheduleTime=later(3600))
    body["spec"]["target"]["uri"] = URI
    spec = copy.deepcopy(body["spec"])
    case.change(spec)
    body["spec"] = spec
    before = google_calls(emulator)

    gtask.create(namespace, body)  # admission lets it in
    obj = wait_ready(gtask, namespace, "bad", "InvalidSpec")
    ready = condition(obj, "Ready")
    assert ready["status"] == "False"
    assert ready["message"].startswith(f"{case.field}: "), ready["message"]
    assert obj["status"]["phase"] == "Pending"
    assert "taskName" not in obj["status"]
    warnings = wait_for(lambda: [e for e in events_for(gtask.api.api_client, namespace, "bad")
                                 if e["reason"] == "InvalidSpec"], timeout=10,
                        what="the InvalidSpec event (posted in the background)")
    assert warnings[0]["type"] == "Warning"
    assert case.field in warnings[0]["message"]

    # deleting it calls nothing either: it never had a task
    gtask.delete(namespace, "bad")
    gone(gtask, namespace, "bad")
    assert google_calls(emulator) == before
