"""The event recorder against the real API server: everything queued is posted, in order,
and a full backlog drops the oldest, counted."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from kubernetes import client as k8s_client
from prometheus_client import REGISTRY
from tests.conftest import ControlPlane

from gcpcall.kube import KubeClient, ObjectRef, load_connection
from gcpcall.observe.events import EventRecorder


@pytest.fixture
async def kube(controlplane: ControlPlane) -> AsyncIterator[KubeClient]:
    client = KubeClient(load_connection(controlplane.kubeconfig))
    yield client
    await client.close()


def posted(k8s: k8s_client.ApiClient, namespace: str) -> list[str]:
    items = k8s_client.CoreV1Api(k8s).list_namespaced_event(namespace).items
    return [e.message for e in sorted(items, key=lambda e: e.metadata.creation_timestamp)]


def dropped() -> float:
    return REGISTRY.get_sample_value("gcpcall_events_dropped_total") or 0.0


def ref(namespace: str) -> ObjectRef:
    return ObjectRef("ScheduledGcpCall", "scheduledgcpcalls", namespace, "subject", "uid-1")


async def test_every_queued_event_is_posted(
    kube: KubeClient, k8s: k8s_client.ApiClient, namespace: str
) -> None:
    recorder = EventRecorder(kube, per_second=1000.0, burst=5)
    for i in range(12):
        recorder.normal(ref(namespace), "Created", f"event {i}")
    recorder.warning(ref(namespace), "Failed", "the last one")
    await recorder.flush(within=30.0)
    messages = posted(k8s, namespace)
    assert sorted(messages) == sorted([f"event {i}" for i in range(12)] + ["the last one"])


async def test_a_full_backlog_drops_the_oldest_and_counts_them(
    kube: KubeClient, k8s: k8s_client.ApiClient, namespace: str
) -> None:
    recorder = EventRecorder(kube, per_second=1000.0, burst=10, backlog=3)
    before = dropped()
    for i in range(5):  # queued before the pacer runs: the backlog holds three
        recorder.normal(ref(namespace), "Created", f"event {i}")
    await recorder.flush(within=30.0)
    assert dropped() == before + 2
    assert sorted(posted(k8s, namespace)) == ["event 2", "event 3", "event 4"]
