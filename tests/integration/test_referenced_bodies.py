"""Bodies kept in a ConfigMap or Secret are part of the desired state, as GitOps users expect.

A Secret that Argo CD (or External Secrets) creates a moment after the object is a
dependency that is not there yet: the object waits (`BodySourceNotFound`, retried with
backoff) and converges by itself once it appears. An edit of the referenced object reaches
the Cloud Scheduler job within the drift-check period (3 s in these tests), without the
operator watching Secrets.
"""

from __future__ import annotations

import base64

import pytest
from kubernetes import client as k8s_client
from tests.integration.conftest import Emulator, Objects, Target, condition, wait_for
from tests.integration.test_gcptask_lifecycle import make_queue, wait_phase
from tests.integration.test_gcptask_lifecycle import sample as task_sample
from tests.integration.test_scheduled_lifecycle import job_name, ready, sample

pytestmark = pytest.mark.usefixtures("operator")


def _secret(namespace: str, name: str, body: bytes) -> k8s_client.V1Secret:
    return k8s_client.V1Secret(metadata=k8s_client.V1ObjectMeta(name=name, namespace=namespace),
                               data={"body.json": base64.b64encode(body).decode()})


def test_a_secret_created_after_the_object_is_waited_for(
    sgc: Objects, namespace: str, emulator: Emulator, k8s: k8s_client.ApiClient
) -> None:
    body = sample("later-secret")
    body["spec"]["target"]["body"] = {"fromSecret": {"name": "payload", "key": "body.json"}}
    sgc.create(namespace, body)
    obj = ready(sgc, namespace, "later-secret", "BodySourceNotFound")
    message = condition(obj, "Ready")["message"]
    assert message.startswith("spec.target.body.fromSecret: Secret 'payload' does not exist")
    assert condition(obj, "Ready")["status"] == "False"
    assert "jobName" not in obj["status"]

    k8s_client.CoreV1Api(k8s).create_namespaced_secret(
        namespace, _secret(namespace, "payload", b'{"size": 7}'))
    ready(sgc, namespace, "later-secret")  # by itself: nothing edited the object
    job = emulator.scheduler().get_job(name=job_name(namespace, "later-secret"))
    assert job.http_target.body == b'{"size": 7}'


def test_an_edited_configmap_reaches_the_job_within_the_drift_check(
    sgc: Objects, namespace: str, emulator: Emulator, k8s: k8s_client.ApiClient
) -> None:
    core = k8s_client.CoreV1Api(k8s)
    core.create_namespaced_config_map(namespace, k8s_client.V1ConfigMap(
        metadata=k8s_client.V1ObjectMeta(name="rule"), data={"body.json": '{"priority": 1}'}))
    body = sample("from-configmap")
    body["spec"]["target"]["body"] = {"fromConfigMap": {"name": "rule", "key": "body.json"}}
    sgc.create(namespace, body)
    ready(sgc, namespace, "from-configmap")
    name = job_name(namespace, "from-configmap")
    assert emulator.scheduler().get_job(name=name).http_target.body == b'{"priority": 1}'

    core.patch_namespaced_config_map("rule", namespace, {"data": {"body.json": '{"priority": 2}'}})
    wait_for(lambda: emulator.scheduler().get_job(name=name).http_target.body
             == b'{"priority": 2}', timeout=30, what="the new body in the job")
    obj = ready(sgc, namespace, "from-configmap")
    assert obj["metadata"]["generation"] == 1  # nothing edited the object itself


def test_a_gcptask_waits_for_its_configmap_then_sends_it(
    gtask: Objects, namespace: str, emulator: Emulator, target: Target,
    k8s: k8s_client.ApiClient,
) -> None:
    make_queue(emulator, namespace)
    path = f"/gtask/{namespace}/later-body"
    body = task_sample("later-body", namespace, path)
    body["spec"]["target"]["body"] = {"fromConfigMap": {"name": "launch", "key": "body.json"}}
    gtask.create(namespace, body)
    obj = wait_for(lambda: (o := gtask.get(namespace, "later-body")) and
                   condition(o, "Ready").get("reason") == "BodySourceNotFound" and o,
                   what="BodySourceNotFound")
    assert obj["status"]["phase"] == "Pending"
    k8s_client.CoreV1Api(k8s).create_namespaced_config_map(namespace, k8s_client.V1ConfigMap(
        metadata=k8s_client.V1ObjectMeta(name="launch"), data={"body.json": '{"jobName": "x"}'}))
    wait_phase(gtask, namespace, "later-body", "Unknown", timeout=60)
    assert [r.body for r in target.received(path)] == [b'{"jobName": "x"}']
