"""What kubectl users see of the CRDs: table columns, `kubectl explain`, and RBAC.

Why: `kubectl get`, `kubectl explain` and the API server's authorization are part of the
user-facing contract of api.md and ecosystem.md. They are checked through the same
kubectl version as the server and through the server's own Table output.
"""

from __future__ import annotations

import json
import re
import ssl
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes import client as k8s_client

GROUP = "gcpcall.dev"
VERSION = "v1alpha1"
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"


def create_with_status(
    k8s: k8s_client.ApiClient,
    namespace: str,
    plural: str,
    obj: dict[str, Any],
    status: dict[str, Any],
) -> None:
    api = k8s_client.CustomObjectsApi(k8s)
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, obj)
    api.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, plural, obj["metadata"]["name"], {"status": status}
    )


def condition(type_: str, status: str, reason: str) -> dict[str, str]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": "",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }


def rfc3339(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def scheduled_call(k8s: k8s_client.ApiClient, namespace: str) -> str:
    """A ScheduledGcpCall with a status as the operator would write it."""
    now = datetime.now(UTC)
    create_with_status(
        k8s,
        namespace,
        "scheduledgcpcalls",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ScheduledGcpCall",
            "metadata": {"name": "hourly"},
            "spec": {
                "schedule": "5 * * * *",
                "target": {"uri": "https://compute.googleapis.com/compute/v1/x"},
            },
        },
        {
            "conditions": [
                condition("Ready", "True", "UpToDate"),
                condition("LastRunSucceeded", "False", "TargetError"),
            ],
            "lastRun": {"attemptTime": rfc3339(now - timedelta(minutes=30))},
            "nextRunTime": rfc3339(now + timedelta(minutes=50)),
        },
    )
    return "hourly"


@pytest.fixture
def task(k8s: k8s_client.ApiClient, namespace: str) -> str:
    """A GcpTask with a status as the operator would write it."""
    create_with_status(
        k8s,
        namespace,
        "gcptasks",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "GcpTask",
            "metadata": {"name": "once"},
            "spec": {"queue": "etl", "target": {"uri": "https://run.example.com/x"}},
        },
        {
            "phase": "Succeeded",
            "dispatchCount": 3,
            "conditions": [
                condition("Ready", "True", "Created"),
                condition("Succeeded", "True", "Succeeded"),
            ],
        },
    )
    return "once"


def header_of(kubectl_output: str) -> list[str]:
    return kubectl_output.splitlines()[0].split()


def server_table(controlplane: Any, path: str) -> dict[str, Any]:
    """GET `path` from the API server as a meta.k8s.io Table, as kubectl asks for it."""
    # The URL is our own API server's https:// address, never user input.
    request = urllib.request.Request(
        controlplane.server + path,
        headers={"Accept": TABLE, "Authorization": f"Bearer {controlplane.token}"},
    )
    context = ssl.create_default_context(cafile=controlplane.ca_file)
    with urllib.request.urlopen(request, context=context, timeout=30) as response:
        table: dict[str, Any] = json.load(response)
    return table


def test_kubectl_get_wide_shows_the_scheduledgcpcall_columns_in_order(
    controlplane: Any, namespace: str, scheduled_call: str
) -> None:
    wide = controlplane.kubectl("get", "sgc", "-n", namespace, "-o", "wide").stdout
    narrow = controlplane.kubectl("get", "sgc", "-n", namespace).stdout

    assert header_of(wide) == [
        "NAME",
        "SCHEDULE",
        "READY",
        "STATUS",
        "LAST-RUN",
        "RESULT",
        "NEXT-RUN",
        "AGE",
    ]
    assert header_of(narrow) == [
        "NAME",
        "SCHEDULE",
        "READY",
        "STATUS",
        "LAST-RUN",
        "RESULT",
        "AGE",
    ]
    row = wide.splitlines()[1]
    assert row.startswith(f"{scheduled_call} ")
    assert "5 * * * *" in row
    assert re.search(r"\bTrue\s+UpToDate\s+30m\s+TargetError\s+\d{4}-\d\d-\d\dT", row), row


def test_server_table_cells_of_a_scheduledgcpcall(
    controlplane: Any, namespace: str, scheduled_call: str
) -> None:
    table = server_table(
        controlplane, f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/scheduledgcpcalls"
    )

    columns = [(c["name"], c["type"], c.get("priority", 0)) for c in table["columnDefinitions"]]
    assert columns == [
        ("Name", "string", 0),
        ("Schedule", "string", 0),
        ("Ready", "string", 0),
        ("Status", "string", 0),
        ("Last-Run", "date", 0),
        ("Result", "string", 0),
        ("Next-Run", "string", 1),
        ("Age", "date", 0),
    ]
    [row] = table["rows"]
    name, schedule, ready, status, last_run, result, next_run, _age = row["cells"]
    assert (name, schedule, ready, status, result) == (
        scheduled_call,
        "5 * * * *",
        "True",
        "UpToDate",
        "TargetError",
    )
    assert last_run == "30m"
    # A future time stays readable (a date column would print "<invalid>").
    assert datetime.strptime(next_run, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC) > datetime(
        2000, 1, 1, tzinfo=UTC
    )


def test_kubectl_get_shows_the_gcptask_columns(
    controlplane: Any, namespace: str, task: str
) -> None:
    out = controlplane.kubectl("get", "gtask", "-n", namespace).stdout

    assert header_of(out) == ["NAME", "QUEUE", "PHASE", "ATTEMPTS", "RESULT", "AGE"]
    assert out.splitlines()[1].split()[:5] == [task, "etl", "Succeeded", "3", "Succeeded"]


def test_an_object_without_status_has_empty_status_columns(
    k8s: k8s_client.ApiClient, controlplane: Any, namespace: str
) -> None:
    # Before the operator writes status, the status columns are empty, not errors.
    k8s_client.CustomObjectsApi(k8s).create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "scheduledgcpcalls",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ScheduledGcpCall",
            "metadata": {"name": "fresh"},
            "spec": {"schedule": "@daily", "target": {"uri": "https://a.example/"}},
        },
    )

    table = server_table(
        controlplane, f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/scheduledgcpcalls"
    )
    out = controlplane.kubectl("get", "sgc", "fresh", "-n", namespace, "-o", "wide").stdout

    [row] = table["rows"]
    assert row["cells"][:7] == ["fresh", "@daily", None, None, None, None, None]
    assert out.splitlines()[1].split()[:2] == ["fresh", "@daily"]


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        (
            "scheduledgcpcall.spec.target",
            [
                "The HTTP call to make",
                "uri\t<string> -required-",
                "The full https:// URL to call",
                "headers\t<[]Object>",
                "Authorization,",
            ],
        ),
        (
            "sgc.spec.target.auth.oauth",
            [
                "Send an OAuth access token. Only for hosts ending in",
                "scope\t<string>",
                "Unset means",
            ],
        ),
        ("sgc.spec.schedule", ["unix-cron"]),
        ("sgc.status.conditions", ["LastRunSucceeded", "reason\t<string> -required-"]),
        (
            "gcptask.spec",
            [
                "Immutable but for deletionPolicy",
                "queue\t<string> -required-",
                "delaySeconds\t<integer>",
            ],
        ),
        ("gtask.spec.target.body", ["at most one of json, text, fromConfigMap", "fromSecret"]),
    ],
)
def test_kubectl_explain_shows_descriptions(
    controlplane: Any, resource: str, expected: list[str]
) -> None:
    out = controlplane.kubectl("explain", resource).stdout

    assert "DESCRIPTION:" in out
    assert "<no description>" not in out
    flattened = re.sub(r"[ \t]*\n[ \t]*", " ", out)
    for text in expected:
        if "\t" in text:
            field, _, kind = text.partition("\t")
            assert re.search(rf"^\s*{re.escape(field)}\s+{re.escape(kind)}", out, re.M), out
        else:
            assert text in flattened, out


def test_a_service_account_without_role_binding_is_forbidden(
    k8s: k8s_client.ApiClient,
    namespace: str,
    sa_api_client: Any,
) -> None:
    as_sa = k8s_client.CustomObjectsApi(sa_api_client(namespace, "nobody"))

    with pytest.raises(k8s_client.ApiException) as refused:
        as_sa.list_namespaced_custom_object(GROUP, VERSION, namespace, "scheduledgcpcalls")

    assert refused.value.status == 403
    assert "system:serviceaccount:" + namespace + ":nobody" in str(refused.value.body)

    # The control: the same identity, once bound to a Role, may list. So the 403 above was
    # RBAC deciding, not a broken token.
    rbac = k8s_client.RbacAuthorizationV1Api(k8s)
    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "sgc-reader"},
            "rules": [
                {"apiGroups": [GROUP], "resources": ["scheduledgcpcalls"], "verbs": ["list"]}
            ],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "sgc-reader"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "sgc-reader",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "nobody", "namespace": namespace}],
        },
    )
    deadline = time.monotonic() + 30  # the RBAC authorizer's cache follows a watch
    while True:
        try:
            listed = as_sa.list_namespaced_custom_object(
                GROUP, VERSION, namespace, "scheduledgcpcalls"
            )
            break
        except k8s_client.ApiException as e:
            if e.status != 403 or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert listed["items"] == []
    with pytest.raises(k8s_client.ApiException) as still_refused:
        as_sa.list_namespaced_custom_object(GROUP, VERSION, namespace, "gcptasks")
    assert still_refused.value.status == 403
