"""Deletion and TTL with exactly the chart's ClusterRole.

The operator adds and removes its own finalizer (a conditional patch, re-read with `get`
when raced) and deletes a finished GcpTask once `ttlSecondsAfterFinished` has passed; both
must work as the chart's ServiceAccount, not only as the admin the integration suite uses.
"""

from __future__ import annotations

import datetime

import pytest
from google.api_core import exceptions
from google.cloud import tasks_v2
from kubernetes import client as k8s_client

from tests.e2e.conftest import (
    DEFAULT_KSA,
    LOCATION,
    PROJECT,
    bind_workload_identity,
    gsa,
    ready,
    sample_call,
)
from tests.integration.conftest import Emulator, Objects, Operator, Target, wait_for

FINALIZER = "gcpcall.dev/finalizer"


def test_deleting_a_call_deletes_its_job(
    e2e_operator: Operator, e2e_k8s: k8s_client.ApiClient, e2e_emulator: Emulator,
    e2e_sgc: Objects, e2e_namespace: str,
) -> None:
    ns = e2e_namespace
    bind_workload_identity(e2e_k8s, e2e_emulator, ns, DEFAULT_KSA, gsa("runner"))
    e2e_sgc.create(ns, sample_call("doomed", {"json": {"size": 1}}))
    obj = ready(e2e_sgc, ns, "doomed", e2e_operator)
    assert FINALIZER in obj["metadata"]["finalizers"]
    e2e_sgc.delete(ns, "doomed")
    wait_for(lambda: e2e_sgc.get(ns, "doomed") is None, timeout=60, what="doomed gone")
    with pytest.raises(exceptions.NotFound):
        e2e_emulator.scheduler().get_job(name=obj["status"]["jobName"])


def test_a_finished_task_is_deleted_after_its_ttl(
    e2e_operator: Operator, e2e_k8s: k8s_client.ApiClient, e2e_emulator: Emulator,
    recorder: Target, e2e_namespace: str,
) -> None:
    ns = e2e_namespace
    bind_workload_identity(e2e_k8s, e2e_emulator, ns, DEFAULT_KSA, gsa("runner"))
    parent = f"projects/{PROJECT}/locations/{LOCATION}"
    retry = tasks_v2.RetryConfig(min_backoff=datetime.timedelta(seconds=0.1),
                                 max_backoff=datetime.timedelta(seconds=0.1))
    e2e_emulator.tasks().create_queue(
        parent=parent, queue=tasks_v2.Queue(name=f"{parent}/queues/{ns}", retry_config=retry))
    path = f"/e2e/{ns}/ttl"
    gtask = Objects(e2e_k8s, "gcptasks")
    gtask.create(ns, {
        "apiVersion": "gcpcall.dev/v1alpha1",
        "kind": "GcpTask",
        "metadata": {"name": "short-lived"},
        "spec": {
            "queue": ns,
            "target": {
                "uri": f"https://target.googleapis.com{path}",
                "method": "POST",
                "body": {"json": {"size": 1}},
                "auth": {"oauth": {}, "serviceAccountEmail": gsa("runner")},
            },
            "ttlSecondsAfterFinished": 1,
        },
    })
    wait_for(lambda: recorder.received(path), timeout=60, what="the dispatch")
    wait_for(lambda: gtask.get(ns, "short-lived") is None, timeout=60,
             what="the finished task deleted after its TTL")
    assert len(recorder.received(path)) == 1
