"""Admission: the real API server refuses invalid ScheduledGcpCalls and GcpTasks.

Why: the CRD schema (OpenAPI plus CEL rules) is the first line of the API contract in api.md.
A user (or Argo CD) should learn at `kubectl apply` time, with the offending field named,
that an object can never work, instead of finding `InvalidSpec` in its status later. Each
case changes one thing in an otherwise valid object, so the refusal is that change's.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client as k8s_client

GROUP = "gcpcall.dev"
VERSION = "v1alpha1"
PLURALS = {"ScheduledGcpCall": "scheduledgcpcalls", "GcpTask": "gcptasks"}

GOOGLE_URI = "https://compute.googleapis.com/compute/v1/projects/p/zones/z/instanceGroupManagers/ig/resize?size=4"

Spec = dict[str, Any]
Mutation = Callable[[Spec], None]


def valid_object(kind: str, name: str = "subject") -> dict[str, Any]:
    """A small valid object of `kind`; every case below breaks exactly one rule of it."""
    spec: Spec = {
        "target": {
            "uri": GOOGLE_URI,
            "headers": [{"name": "Content-Type", "value": "application/json"}],
            "body": {"json": {"size": 4}},
            "auth": {"oauth": {}},
        }
    }
    if kind == "ScheduledGcpCall":
        spec["schedule"] = "5 * * * *"
    else:
        spec["queue"] = "etl"
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    }


def create(k8s: k8s_client.ApiClient, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
    api = k8s_client.CustomObjectsApi(k8s)
    created: dict[str, Any] = api.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURALS[obj["kind"]], obj
    )
    return created


def refusal(call: Callable[[], object]) -> tuple[int, str, list[str]]:
    """Run `call`, which must fail; return the HTTP status, message and fields named."""
    with pytest.raises(k8s_client.ApiException) as info:
        call()
    body = json.loads(info.value.body)
    fields = [c.get("field", "") for c in body.get("details", {}).get("causes", [])]
    return int(info.value.status), str(body["message"]), fields


def set_path(path: str, value: object) -> Mutation:
    """A mutation that sets spec.<path> (dotted; a numeric part indexes a list)."""

    def mutate(spec: Spec) -> None:
        node: Any = spec
        parts = path.split(".")
        for part in parts[:-1]:
            node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
        last = parts[-1]
        if last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value

    return mutate


def delete_path(path: str) -> Mutation:
    def mutate(spec: Spec) -> None:
        node: Any = spec
        parts = path.split(".")
        for part in parts[:-1]:
            node = node[part]
        del node[parts[-1]]

    return mutate


def header(name: str, value: str = "x") -> Mutation:
    return set_path("target.headers", [{"name": name, "value": value}])


def both(*mutations: Mutation) -> Mutation:
    def mutate(spec: Spec) -> None:
        for m in mutations:
            m(spec)

    return mutate


SGC = "ScheduledGcpCall"
TASK = "GcpTask"

# (kind, mutation, the field the refusal must name, a phrase the message must contain)
INVALID: list[Any] = [
    pytest.param(
        SGC, delete_path("schedule"), "spec.schedule", "Required value", id="sgc-missing-schedule"
    ),
    pytest.param(
        SGC, set_path("schedule", ""), "spec.schedule", "at least 1", id="sgc-empty-schedule"
    ),
    pytest.param(
        SGC, set_path("schedule", "5 " * 200), "spec.schedule", "256", id="sgc-schedule-too-long"
    ),
    pytest.param(
        SGC, delete_path("target"), "spec.target", "Required value", id="sgc-missing-target"
    ),
    pytest.param(
        SGC, delete_path("target.uri"), "spec.target.uri", "Required value", id="sgc-missing-uri"
    ),
    pytest.param(
        SGC,
        set_path("delivery", "Pigeon"),
        "spec.delivery",
        "Unsupported value",
        id="sgc-bad-delivery-enum",
    ),
    pytest.param(
        SGC,
        set_path("deletionPolicy", "Orphan"),
        "spec.deletionPolicy",
        "Unsupported value",
        id="sgc-bad-deletion-policy-enum",
    ),
    pytest.param(
        SGC,
        set_path("target.method", "FETCH"),
        "spec.target.method",
        "Unsupported value",
        id="sgc-unknown-method",
    ),
    pytest.param(
        SGC,
        set_path("target.method", "post"),
        "spec.target.method",
        "Unsupported value",
        id="sgc-lower-case-method",
    ),
    pytest.param(
        SGC,
        set_path("target.body.text", "hello"),
        "spec.target.body",
        "at most one of json, text",
        id="sgc-body-json-and-text",
    ),
    pytest.param(
        SGC,
        set_path("target.body.fromSecret", {"name": "s", "key": "k"}),
        "spec.target.body",
        "at most one of json, text",
        id="sgc-body-json-and-secret",
    ),
    pytest.param(
        SGC,
        set_path("target.body", {"text": "a", "fromConfigMap": {"name": "c", "key": "k"}}),
        "spec.target.body",
        "at most one",
        id="sgc-body-text-and-configmap",
    ),
    pytest.param(
        SGC,
        set_path("target.body.json", [1, 2]),
        "spec.target.body.json",
        "type object",
        id="sgc-json-body-not-an-object",
    ),
    pytest.param(
        SGC,
        set_path("target.uri", "https://example.com/hook"),
        "spec.target.auth.oauth",
        ".googleapis.com",
        id="sgc-oauth-to-other-host",
    ),
    pytest.param(
        SGC,
        set_path("target.uri", "https://compute.googleapis.com.evil.example/"),
        "spec.target.auth.oauth",
        ".googleapis.com",
        id="sgc-oauth-host-suffix-trick",
    ),
    pytest.param(
        SGC,
        set_path("target.uri", "https://compute.googleapis.com@evil.example/"),
        "spec.target.auth.oauth",
        ".googleapis.com",
        id="sgc-oauth-userinfo-trick",
    ),
    pytest.param(
        SGC,
        set_path("target.uri", "https://googleapis.com/v1/x"),
        "spec.target.auth.oauth",
        ".googleapis.com",
        id="sgc-oauth-bare-googleapis",
    ),
    pytest.param(
        SGC,
        set_path("target.uri", GOOGLE_URI.replace("https://", "http://")),
        "spec.target.uri",
        "https://",
        id="sgc-http-uri",
    ),
    pytest.param(
        SGC,
        set_path("target.uri", "/compute/v1/projects/p"),
        "spec.target.uri",
        "https://",
        id="sgc-relative-uri",
    ),
    pytest.param(
        SGC,
        set_path("target.uri", "https:///no-host"),
        "spec.target.uri",
        "https://",
        id="sgc-uri-without-host",
    ),
    pytest.param(
        SGC,
        set_path("target.uri", "https://compute.googleapis.com/" + "a" * 2060),
        "spec.target.uri",
        "2083",
        id="sgc-uri-too-long",
    ),
    pytest.param(
        SGC,
        set_path("retry.retryCount", 6),
        "spec.retry.retryCount",
        "less than or equal to 5",
        id="sgc-retry-count-6",
    ),
    pytest.param(
        SGC,
        set_path("retry.retryCount", -1),
        "spec.retry.retryCount",
        "greater than or equal to 0",
        id="sgc-retry-count-negative",
    ),
    pytest.param(
        SGC,
        set_path("retry", {"minBackoffSeconds": 60, "maxBackoffSeconds": 10}),
        "spec.retry.minBackoffSeconds",
        "maxBackoffSeconds",
        id="sgc-min-backoff-above-max",
    ),
    pytest.param(
        SGC,
        set_path("attemptDeadlineSeconds", 10),
        "spec.attemptDeadlineSeconds",
        "greater than or equal to 15",
        id="sgc-attempt-deadline-10",
    ),
    pytest.param(
        SGC,
        set_path("attemptDeadlineSeconds", 1801),
        "spec.attemptDeadlineSeconds",
        "less than or equal to 1800",
        id="sgc-attempt-deadline-1801",
    ),
    pytest.param(
        SGC,
        set_path("historyLimit", 51),
        "spec.historyLimit",
        "less than or equal to 50",
        id="sgc-history-limit-51",
    ),
    pytest.param(
        SGC,
        header("Authorization"),
        "spec.target.headers[0].name",
        "reserved",
        id="sgc-header-authorization",
    ),
    pytest.param(
        SGC,
        header("authorization"),
        "spec.target.headers[0].name",
        "reserved",
        id="sgc-header-authorization-lower-case",
    ),
    pytest.param(
        SGC,
        header("X-CloudScheduler-Foo"),
        "spec.target.headers[0].name",
        "reserved",
        id="sgc-header-x-cloudscheduler",
    ),
    pytest.param(
        SGC,
        header("x-google-internal"),
        "spec.target.headers[0].name",
        "reserved",
        id="sgc-header-x-google",
    ),
    pytest.param(
        SGC,
        header("X-AppEngine-Country"),
        "spec.target.headers[0].name",
        "reserved",
        id="sgc-header-x-appengine",
    ),
    pytest.param(
        SGC, header("HOST"), "spec.target.headers[0].name", "reserved", id="sgc-header-host"
    ),
    pytest.param(
        SGC,
        header("Content-Length"),
        "spec.target.headers[0].name",
        "reserved",
        id="sgc-header-content-length",
    ),
    pytest.param(
        SGC,
        header("User-Agent"),
        "spec.target.headers[0].name",
        "reserved",
        id="sgc-header-user-agent",
    ),
    pytest.param(
        SGC,
        set_path("retry.maxDoublings", 0),
        "spec.retry.maxDoublings",
        "greater than or equal to 1",
        id="sgc-max-doublings-0",
    ),
    pytest.param(
        SGC,
        header("X-Bad Name"),
        "spec.target.headers[0].name",
        "should match",
        id="sgc-header-name-not-a-token",
    ),
    pytest.param(
        SGC,
        header("X-Ok", "a\r\nX-Injected: 1"),
        "spec.target.headers[0].value",
        "should match",
        id="sgc-header-value-line-break",
    ),
    pytest.param(
        SGC,
        set_path("target.headers", [{"name": "X-A", "value": "1"}, {"name": "X-A", "value": "2"}]),
        "spec.target.headers[1]",
        "Duplicate value",
        id="sgc-duplicate-header",
    ),
    pytest.param(
        SGC,
        set_path("target.headers", [{"name": "X-A", "value": "1"}, {"name": "x-a", "value": "2"}]),
        "spec.target.headers",
        "unique, ignoring case",
        id="sgc-duplicate-header-ignoring-case",
    ),
    pytest.param(
        SGC,
        set_path("target.method", "GET"),
        "spec.target.body",
        "POST, PUT or PATCH",
        id="sgc-body-with-get",
    ),
    pytest.param(
        SGC,
        set_path("target.method", "DELETE"),
        "spec.target.body",
        "POST, PUT or PATCH",
        id="sgc-body-with-delete",
    ),
    pytest.param(
        SGC,
        set_path("target.auth.oidc", {"audience": "https://a.example"}),
        "spec.target.auth.oidc",
        "at most one of oauth, oidc",
        id="sgc-oauth-and-oidc",
    ),
    pytest.param(
        SGC,
        set_path("target.auth", {"serviceAccountEmail": "a@p.iam.gserviceaccount.com"}),
        "spec.target.auth.serviceAccountEmail",
        "needs target.auth.oauth",
        id="sgc-service-account-email-without-token",
    ),
    pytest.param(
        SGC,
        set_path("operation", {"follow": True}),
        "spec.operation",
        "delivery: Relay",
        id="sgc-operation-without-relay",
    ),
    pytest.param(
        SGC,
        both(set_path("delivery", "Direct"), set_path("operation", {"follow": True})),
        "spec.operation",
        "delivery: Relay",
        id="sgc-operation-with-direct",
    ),
    pytest.param(
        SGC,
        set_path("serviceAccountName", "Runner_SA"),
        "spec.serviceAccountName",
        "should match",
        id="sgc-service-account-name-not-dns",
    ),
    pytest.param(
        SGC,
        set_path("project", "p/../../other"),
        "spec.project",
        "should match",
        id="sgc-project-with-slash",
    ),
    pytest.param(
        SGC, set_path("paused", "yes"), "spec.paused", "boolean", id="sgc-paused-not-boolean"
    ),
    pytest.param(
        TASK, delete_path("queue"), "spec.queue", "Required value", id="task-missing-queue"
    ),
    pytest.param(
        TASK,
        set_path("queue", "etl/../other"),
        "spec.queue",
        "should match",
        id="task-queue-with-slash",
    ),
    pytest.param(
        TASK,
        both(set_path("scheduleTime", "2026-11-22T12:00:00Z"), set_path("delaySeconds", 60)),
        "spec.delaySeconds",
        "exclusive",
        id="task-schedule-time-and-delay",
    ),
    pytest.param(
        TASK,
        set_path("scheduleTime", "tomorrow noon"),
        "spec.scheduleTime",
        "date-time",
        id="task-schedule-time-not-rfc3339",
    ),
    pytest.param(
        TASK,
        set_path("delaySeconds", 2592001),
        "spec.delaySeconds",
        "less than or equal to 2592000",
        id="task-delay-over-30-days",
    ),
    pytest.param(
        TASK,
        set_path("dispatchDeadlineSeconds", 10),
        "spec.dispatchDeadlineSeconds",
        "greater than or equal to 15",
        id="task-dispatch-deadline-10",
    ),
    pytest.param(
        TASK,
        set_path("dispatchDeadlineSeconds", 1801),
        "spec.dispatchDeadlineSeconds",
        "less than or equal to 1800",
        id="task-dispatch-deadline-1801",
    ),
    pytest.param(
        TASK,
        set_path("delivery", "direct"),
        "spec.delivery",
        "Unsupported value",
        id="task-bad-delivery-enum",
    ),
    pytest.param(
        TASK,
        set_path("operation", {"follow": True}),
        "spec.operation",
        "delivery: Relay",
        id="task-operation-without-relay",
    ),
    pytest.param(
        TASK,
        header("X-CloudScheduler"),
        "spec.target.headers[0].name",
        "reserved",
        id="task-header-x-cloudscheduler",
    ),
    pytest.param(
        TASK,
        header("user-agent"),
        "spec.target.headers[0].name",
        "reserved",
        id="task-header-user-agent",
    ),
    pytest.param(
        TASK,
        set_path("target.uri", "http://example.com/"),
        "spec.target.uri",
        "https://",
        id="task-http-uri",
    ),
    pytest.param(
        TASK,
        set_path("target.uri", "https://run.example.com/"),
        "spec.target.auth.oauth",
        ".googleapis.com",
        id="task-oauth-to-other-host",
    ),
    pytest.param(
        TASK,
        set_path("target.method", "HEAD"),
        "spec.target.body",
        "POST, PUT or PATCH",
        id="task-body-with-head",
    ),
    pytest.param(
        TASK,
        set_path("ttlSecondsAfterFinished", -1),
        "spec.ttlSecondsAfterFinished",
        "greater than or equal to 0",
        id="task-negative-ttl",
    ),
]


@pytest.mark.parametrize(("kind", "mutation", "field", "phrase"), INVALID)
def test_invalid_object_is_refused_naming_the_field(
    k8s: k8s_client.ApiClient,
    namespace: str,
    kind: str,
    mutation: Mutation,
    field: str,
    phrase: str,
) -> None:
    obj = valid_object(kind)
    mutation(obj["spec"])

    status, message, fields = refusal(lambda: create(k8s, namespace, obj))

    assert status == 422, message
    assert f"{field}:" in message, message
    assert field in fields, fields
    assert phrase in message, message


@pytest.mark.parametrize("kind", [SGC, TASK])
def test_the_base_object_of_the_invalid_cases_is_valid(
    k8s: k8s_client.ApiClient, namespace: str, kind: str
) -> None:
    # Without this, a case above could pass because the base object was already invalid.
    created = create(k8s, namespace, valid_object(kind))
    assert created["spec"] == valid_object(kind)["spec"]


# Values at the edges of each range, and forms that look risky but are fine: the schema
# must not refuse what Google accepts.
VALID: list[Any] = [
    pytest.param(
        SGC,
        set_path(
            "retry",
            {
                "retryCount": 0,
                "maxRetryDurationSeconds": 0,
                "minBackoffSeconds": 0,
                "maxBackoffSeconds": 0,
                "maxDoublings": 1,
            },
        ),
        id="sgc-retry-all-lowest",
    ),
    pytest.param(SGC, set_path("retry.retryCount", 5), id="sgc-retry-count-5"),
    pytest.param(SGC, set_path("attemptDeadlineSeconds", 15), id="sgc-attempt-deadline-15"),
    pytest.param(SGC, set_path("attemptDeadlineSeconds", 1800), id="sgc-attempt-deadline-1800"),
    pytest.param(SGC, set_path("historyLimit", 0), id="sgc-history-limit-0"),
    pytest.param(SGC, set_path("historyLimit", 50), id="sgc-history-limit-50"),
    pytest.param(
        SGC,
        set_path("target.uri", "https://compute.googleapis.com/" + "a" * 2052),
        id="sgc-uri-2083-chars",
    ),
    pytest.param(
        SGC,
        set_path("target.uri", "https://compute.googleapis.com:443/v1/x"),
        id="sgc-oauth-host-with-port",
    ),
    pytest.param(
        SGC,
        set_path("target.uri", "HTTPS://Compute.GoogleAPIs.com/v1/x"),
        id="sgc-oauth-host-upper-case",
    ),
    pytest.param(SGC, delete_path("target.auth"), id="sgc-unauthenticated"),
    pytest.param(
        SGC,
        set_path("target.auth", {"oidc": {}, "serviceAccountEmail": "a@b.c"}),
        id="sgc-oidc-to-googleapis",
    ),
    pytest.param(SGC, set_path("target.method", "PUT"), id="sgc-body-with-put"),
    pytest.param(SGC, set_path("target.method", "PATCH"), id="sgc-body-with-patch"),
    pytest.param(
        SGC,
        both(set_path("target.method", "GET"), delete_path("target.body")),
        id="sgc-get-without-body",
    ),
    pytest.param(SGC, set_path("target.body", {}), id="sgc-empty-body"),
    pytest.param(
        SGC,
        set_path(
            "target.headers",
            [{"name": f"X-H{i}-" + "n" * 250, "value": "v" * 8192} for i in range(32)],
        ),
        id="sgc-32-long-headers",
    ),
    pytest.param(
        SGC, header("X-Goog-User-Project", "billing-project"), id="sgc-header-x-goog-user-project"
    ),
    pytest.param(
        SGC, set_path("timeZone", "America/Argentina/Buenos_Aires"), id="sgc-time-zone-three-parts"
    ),
    pytest.param(
        SGC, set_path("project", "example.com:my-project"), id="sgc-domain-scoped-project"
    ),
    pytest.param(
        SGC,
        both(set_path("delivery", "Relay"), set_path("operation", {})),
        id="sgc-relay-empty-operation",
    ),
    pytest.param(TASK, set_path("delaySeconds", 0), id="task-delay-0"),
    pytest.param(
        TASK,
        set_path("scheduleTime", "2026-11-22T12:00:00.5+01:00"),
        id="task-schedule-time-offset",
    ),
    pytest.param(TASK, set_path("ttlSecondsAfterFinished", 0), id="task-ttl-0"),
]


@pytest.mark.parametrize(("kind", "mutation"), VALID)
def test_valid_edge_object_is_accepted_unchanged(
    k8s: k8s_client.ApiClient, namespace: str, kind: str, mutation: Mutation
) -> None:
    obj = valid_object(kind)
    mutation(obj["spec"])

    created = create(k8s, namespace, copy.deepcopy(obj))

    assert created["spec"] == obj["spec"]


def test_gcptask_spec_edit_is_refused_with_create_a_new_object(
    k8s: k8s_client.ApiClient, namespace: str
) -> None:
    api = k8s_client.CustomObjectsApi(k8s)
    create(k8s, namespace, valid_object(TASK, "once"))

    status, message, fields = refusal(
        lambda: api.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, "gcptasks", "once", {"spec": {"queue": "other"}}
        )
    )

    assert status == 422, message
    assert "spec:" in message, message
    assert "immutable" in message, message
    assert "create a new GcpTask" in message, message
    assert "spec" in fields, fields


def test_gcptask_spec_edit_adding_a_field_is_refused(
    k8s: k8s_client.ApiClient, namespace: str
) -> None:
    api = k8s_client.CustomObjectsApi(k8s)
    create(k8s, namespace, valid_object(TASK, "once"))

    status, message, _ = refusal(
        lambda: api.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, "gcptasks", "once", {"spec": {"delaySeconds": 30}}
        )
    )

    assert status == 422, message
    assert "create a new GcpTask" in message, message


@pytest.mark.parametrize("edit", [
    {"deletionPolicy": "Abandon"}, {"ttlSecondsAfterFinished": 60},
    {"deletionPolicy": "Abandon", "ttlSecondsAfterFinished": 0},
])
def test_gcptask_deletion_policy_and_ttl_stay_mutable(
    k8s: k8s_client.ApiClient, namespace: str, edit: dict[str, Any]
) -> None:
    """So a DeletionBlocked task can be released with Abandon, as a ScheduledGcpCall can."""
    api = k8s_client.CustomObjectsApi(k8s)
    create(k8s, namespace, valid_object(TASK, "once"))
    patched = api.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "gcptasks", "once", {"spec": edit})
    for key, value in edit.items():
        assert patched["spec"][key] == value
    # and back again: removing them is an edit of those two fields only
    api.patch_namespaced_custom_object(GROUP, VERSION, namespace, "gcptasks", "once",
                                       {"spec": {key: None for key in edit}})


@pytest.mark.parametrize("edit", [
    {"project": "other-project"}, {"serviceAccountName": "someone-else"},
    {"dispatchDeadlineSeconds": 60}, {"delivery": "Relay"},
    {"target": {"uri": "https://example.com/other"}},
])
def test_gcptask_every_other_field_stays_immutable(
    k8s: k8s_client.ApiClient, namespace: str, edit: dict[str, Any]
) -> None:
    api = k8s_client.CustomObjectsApi(k8s)
    create(k8s, namespace, valid_object(TASK, "once"))
    status, message, _ = refusal(
        lambda: api.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, "gcptasks", "once", {"spec": edit}))
    assert status == 422, message
    assert "create a new GcpTask" in message, message


def test_gcptask_metadata_and_status_stay_writable(
    k8s: k8s_client.ApiClient, namespace: str
) -> None:
    # The operator adds a finalizer and annotations and writes status: immutability of the
    # spec must not block any of that.
    api = k8s_client.CustomObjectsApi(k8s)
    create(k8s, namespace, valid_object(TASK, "once"))

    api.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "gcptasks",
        "once",
        {
            "metadata": {
                "finalizers": ["gcpcall.dev/finalizer"],
                "annotations": {"gcpcall.dev/note": "x"},
                "labels": {"team": "a"},
            }
        },
    )
    api.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "gcptasks", "once", {"status": {"phase": "Queued"}}
    )
    got = api.get_namespaced_custom_object(GROUP, VERSION, namespace, "gcptasks", "once")

    assert got["metadata"]["finalizers"] == ["gcpcall.dev/finalizer"]
    assert got["status"] == {"phase": "Queued"}
    assert got["spec"] == valid_object(TASK)["spec"]


def test_scheduledgcpcall_spec_stays_editable(k8s: k8s_client.ApiClient, namespace: str) -> None:
    api = k8s_client.CustomObjectsApi(k8s)
    create(k8s, namespace, valid_object(SGC, "editable"))

    patched = api.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "scheduledgcpcalls",
        "editable",
        {"spec": {"schedule": "0 * * * *", "paused": True}},
    )

    assert patched["spec"]["schedule"] == "0 * * * *"
    assert patched["spec"]["paused"] is True


def test_a_later_edit_into_an_invalid_spec_is_refused(
    k8s: k8s_client.ApiClient, namespace: str
) -> None:
    api = k8s_client.CustomObjectsApi(k8s)
    create(k8s, namespace, valid_object(SGC, "editable"))

    status, message, _ = refusal(
        lambda: api.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            "scheduledgcpcalls",
            "editable",
            {"spec": {"target": {"uri": "https://hooks.example.com/x"}}},
        )
    )

    assert status == 422, message
    assert "spec.target.auth.oauth:" in message, message
