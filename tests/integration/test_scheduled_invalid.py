"""Invalid ScheduledGcpCalls that the CRD schema accepts: refused by the operator.

Each one must end `Ready=False, reason=InvalidSpec` with a message naming the field, and
must never reach Google: the emulator sees no Cloud Scheduler call for it.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from kubernetes import client as k8s_client
from tests.integration.conftest import TARGET_HOST, Emulator, Objects, condition, wait_for
from tests.integration.test_scheduled_lifecycle import sample

pytestmark = pytest.mark.usefixtures("operator")


def _set(body: dict[str, Any], path: str, value: Any) -> None:
    node = body["spec"]
    keys = path.split(".")
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    if value is None:
        node.pop(keys[-1], None)
    else:
        node[keys[-1]] = value


BIG = "x" * (1024 * 1024 - 10)  # within the schema's limit; with uri and headers, over 1 MB

# (id, edits to the valid sample, the field the message must name)
CASES: list[tuple[str, dict[str, Any], str]] = [
    ("cron-minute-61", {"schedule": "61 * * * *"}, "spec.schedule"),
    ("cron-three-fields", {"schedule": "* * *"}, "spec.schedule"),
    ("cron-six-fields", {"schedule": "0 0 * * * *"}, "spec.schedule"),
    ("cron-step-zero", {"schedule": "*/0 * * * *"}, "spec.schedule"),
    ("cron-bad-weekday", {"schedule": "0 9 * * FUNDAY"}, "spec.schedule"),
    ("cron-month-13", {"schedule": "0 0 1 13 *"}, "spec.schedule"),
    ("cron-words", {"schedule": "every 5 minutes"}, "spec.schedule"),
    ("tz-unknown", {"timeZone": "Mars/Olympus_Mons"}, "spec.timeZone"),
    ("tz-lowercase", {"timeZone": "europe/berlin"}, "spec.timeZone"),
    ("tz-offset", {"timeZone": "UTC+2"}, "spec.timeZone"),
    ("body-too-big", {"target.body": {"text": BIG}}, "spec.target"),
    ("project-trailing-hyphen", {"project": "my-project-"}, "spec.project"),
    ("project-too-short", {"project": "abc"}, "spec.project"),
    ("headers-over-80kb", {"target.headers": [{"name": f"X-Pad-{i}", "value": "v" * 3000}
                                              for i in range(30)]}, "spec.target.headers"),
    ("oauth-no-service-account", {"target.auth.serviceAccountEmail": None},
     "spec.target.auth.serviceAccountEmail"),
    ("email-without-domain-dot", {"target.auth.serviceAccountEmail": "runner@localhost"},
     "spec.target.auth.serviceAccountEmail"),
    # Templates (delivery: Relay renders them): refused before any Google call
    *[(f"template-{tid}", {"delivery": "Relay", "target.body": {"json": {"jobName": source}}},
       "spec.target.body.json.jobName") for tid, source in {
        "syntax": "{{ run.id ", "unknown-name": "{{ secret }}", "unknown-field": "{{ run.x }}",
        "dunder": "{{ run.__class__ }}", "string-method": "{{ ''.join }}",
        "call": "{{ ''.join(['a']) }}", "huge-output": "{{ 'x' * 10**9 }}",
        "loop": "{% for i in range(9) %}x{% endfor %}", "include": "{% include 'x' %}",
        "set": "{% set x = 1 %}", "other-filter": "{{ run.id | upper }}",
        "subscript": "{{ run['id'] }}", "global": "{{ lipsum() }}"}.items()],
    ("template-in-a-header", {"delivery": "Relay",
                              "target.headers": [{"name": "X-Run", "value": "{{ nope }}"}]},
     "spec.target.headers[0].value"),
    ("template-moving-the-host", {"delivery": "Relay", "target.auth": None,
                                  "target.uri": "https://{{ object.name }}.example.com/x"},
     "spec.target.uri"),
    ("direct-using-the-template-context",
     {"target.body": {"json": {"jobName": "wordcount-{{ run.id }}"}}},
     "spec.target.body.json.jobName"),
]


@pytest.mark.parametrize(("edits", "field"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_invalid_spec_is_reported_and_never_reaches_google(
    sgc: Objects, namespace: str, emulator: Emulator, edits: dict[str, Any], field: str
) -> None:
    body = copy.deepcopy(sample("bad"))
    body["spec"]["target"]["uri"] = f"https://{TARGET_HOST}/invalid"
    for path, value in edits.items():
        _set(body, path, value)
    before = len(emulator.calls())
    try:
        sgc.create(namespace, body)
    except k8s_client.ApiException as e:  # pragma: no cover - shows which case to move
        pytest.fail(f"refused at admission, not by the operator: {e.body}")
    obj = wait_for(lambda: (o := sgc.get(namespace, "bad")) and
                   condition(o, "Ready").get("reason") and o, what="a Ready condition")
    ready = condition(obj, "Ready")
    assert ready["status"] == "False"
    assert ready["reason"] == "InvalidSpec"
    assert field in ready["message"]
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
    assert "jobName" not in obj["status"]
    scheduler_calls = [c for c in emulator.calls()[before:]
                       if c["service"].endswith("CloudScheduler")]
    assert scheduler_calls == [] or all(c["method"] == "ListJobs" for c in scheduler_calls)
    # and it can be deleted (a 1 MB body once made kopf's bookkeeping annotation too big)
    sgc.delete(namespace, "bad")
    wait_for(lambda: sgc.get(namespace, "bad") is None, what="the invalid object deleted")


def test_invalid_project_from_namespace_annotation_names_its_source(
    sgc: Objects, namespace: str, emulator: Emulator, k8s: k8s_client.ApiClient
) -> None:
    k8s_client.CoreV1Api(k8s).patch_namespace(
        namespace, {"metadata": {"annotations": {"gcpcall.dev/project": "Not_A_Project"}}}
    )
    body = sample("from-namespace")
    before = len(emulator.calls("CreateJob"))
    sgc.create(namespace, body)
    obj = wait_for(lambda: (o := sgc.get(namespace, "from-namespace")) and
                   condition(o, "Ready").get("reason") and o, what="a Ready condition")
    ready = condition(obj, "Ready")
    assert ready["reason"] == "InvalidSpec"
    assert "spec.project" in ready["message"]
    assert "gcpcall.dev/project" in ready["message"]
    assert len(emulator.calls("CreateJob")) == before
