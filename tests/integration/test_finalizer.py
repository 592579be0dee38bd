"""Our finalizer and the deletion runner against the real API server (no operator process).

The conditional JSON patches must never overwrite another controller's finalizer, must
notice an object that is gone or being deleted, and must retry when the object changed in
between; the runner must retry a failing cleanup, start over at once when the spec
changes, and remove only our finalizer when done.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from tests.conftest import ControlPlane
from tests.integration.conftest import Objects

from gcpcall.kube import KubeClient, ObjectRef, load_connection
from gcpcall.reconcile.finalizer import FINALIZER, Deletions, Held, Snapshot, hold, release
from gcpcall.reconcile.outcome import Outcome

OTHER = "example.com/other-controller"


async def until(predicate: Callable[[], bool], within: float = 20.0) -> None:
    """Wait for `predicate` (polled; a bound, not a timing assertion)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


@pytest.fixture
async def kube(controlplane: ControlPlane) -> AsyncIterator[KubeClient]:
    client = KubeClient(load_connection(controlplane.kubeconfig))
    yield client
    await client.close()


def body(name: str, finalizers: list[str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if finalizers:
        meta["finalizers"] = finalizers
    return {
        "apiVersion": "gcpcall.dev/v1alpha1",
        "kind": "ScheduledGcpCall",
        "metadata": meta,
        "spec": {"schedule": "5 * * * *", "target": {"uri": "https://example.com/x"}},
    }


def create(sgc: Objects, namespace: str, name: str,
           finalizers: list[str] | None = None) -> dict[str, Any]:
    """An object with exactly `finalizers`: the admission policy adds ours at create, so
    it is set back here, as on a cluster without the policy."""
    sgc.create(namespace, body(name))
    return sgc.patch(namespace, name, {"metadata": {"finalizers": finalizers or None}})


def ref_of(obj: dict[str, Any]) -> ObjectRef:
    meta = obj["metadata"]
    return ObjectRef("ScheduledGcpCall", "scheduledgcpcalls", meta["namespace"], meta["name"],
                     meta["uid"])


def seen(obj: dict[str, Any]) -> Snapshot:
    return Snapshot.of(obj["metadata"])


def finalizers(sgc: Objects, namespace: str, name: str) -> list[str]:
    obj = sgc.get(namespace, name)
    assert obj is not None
    return list(obj["metadata"].get("finalizers") or [])


def test_the_admission_policy_adds_ours_at_create_and_keeps_others(
    sgc: Objects, namespace: str
) -> None:
    assert sgc.create(namespace, body("plain"))["metadata"]["finalizers"] == [FINALIZER]
    with_other = sgc.create(namespace, body("other", [OTHER]))
    assert with_other["metadata"]["finalizers"] == [OTHER, FINALIZER]
    for name in ("plain", "other"):
        sgc.patch(namespace, name, {"metadata": {"finalizers": None}})


async def test_hold_adds_ours_to_an_empty_list(
    kube: KubeClient, sgc: Objects, namespace: str
) -> None:
    obj = create(sgc, namespace, "a")
    assert await hold(ref_of(obj), seen(obj), kube) is Held.HELD
    assert finalizers(sgc, namespace, "a") == [FINALIZER]
    # already there: no second copy
    assert await hold(ref_of(obj), None, kube) is Held.HELD
    assert finalizers(sgc, namespace, "a") == [FINALIZER]


async def test_hold_keeps_another_controllers_finalizer_added_in_between(
    kube: KubeClient, sgc: Objects, namespace: str
) -> None:
    obj = create(sgc, namespace, "b")
    stale = seen(obj)  # taken before the other controller writes
    sgc.patch(namespace, "b", {"metadata": {"finalizers": [OTHER]}})
    assert await hold(ref_of(obj), stale, kube) is Held.HELD
    assert finalizers(sgc, namespace, "b") == [OTHER, FINALIZER]


async def test_hold_appends_when_a_list_exists(
    kube: KubeClient, sgc: Objects, namespace: str
) -> None:
    obj = create(sgc, namespace, "c", [OTHER])
    assert await hold(ref_of(obj), seen(obj), kube) is Held.HELD
    assert finalizers(sgc, namespace, "c") == [OTHER, FINALIZER]


async def test_hold_reports_gone_and_deleting(
    kube: KubeClient, sgc: Objects, namespace: str
) -> None:
    gone = create(sgc, namespace, "gone")
    sgc.delete(namespace, "gone")
    assert await hold(ref_of(gone), seen(gone), kube) is Held.GONE

    # Being deleted, held open by another controller: no finalizer can be added any more.
    going = create(sgc, namespace, "going", [OTHER])
    sgc.delete(namespace, "going")
    assert await hold(ref_of(going), seen(going), kube) is Held.DELETING
    assert finalizers(sgc, namespace, "going") == [OTHER]
    sgc.patch(namespace, "going", {"metadata": {"finalizers": None}})

    # A new object under the same name is not the one we were holding.
    old = create(sgc, namespace, "again")
    sgc.delete(namespace, "again")
    create(sgc, namespace, "again")
    assert await hold(ref_of(old), None, kube) is Held.GONE
    assert finalizers(sgc, namespace, "again") == []  # the new object was not touched


async def test_release_removes_only_ours_even_from_a_stale_view(
    kube: KubeClient, sgc: Objects, namespace: str
) -> None:
    obj = create(sgc, namespace, "d", [FINALIZER])
    stale = seen(obj).finalizers
    sgc.patch(namespace, "d", {"metadata": {"finalizers": [FINALIZER, OTHER]}})
    await release(ref_of(obj), stale, kube)
    assert finalizers(sgc, namespace, "d") == [OTHER]
    await release(ref_of(obj), None, kube)  # nothing of ours left: no write, no error
    assert finalizers(sgc, namespace, "d") == [OTHER]


async def test_release_leaves_a_new_object_of_the_same_name_alone(
    kube: KubeClient, sgc: Objects, namespace: str
) -> None:
    old = create(sgc, namespace, "h", [FINALIZER])
    sgc.patch(namespace, "h", {"metadata": {"finalizers": None}})
    sgc.delete(namespace, "h")
    create(sgc, namespace, "h", [FINALIZER])  # the same finalizer list, another object
    await release(ref_of(old), [FINALIZER], kube)
    assert finalizers(sgc, namespace, "h") == [FINALIZER]


async def test_deletions_retry_until_done_then_the_object_goes(
    kube: KubeClient, sgc: Objects, namespace: str
) -> None:
    obj = create(sgc, namespace, "e", [FINALIZER])
    sgc.delete(namespace, "e")  # held by our finalizer
    deleting = sgc.get(namespace, "e")
    assert deleting is not None
    assert deleting["metadata"].get("deletionTimestamp")
    outcomes = [Outcome(0.05, "Blocked"), Outcome(0.05, "Blocked"), Outcome.done()]
    calls: list[str] = []

    async def cleanup() -> Outcome:
        calls.append("cleanup")
        return outcomes[len(calls) - 1]

    runner = Deletions(kube)
    runner.start()
    runner.offer(ref_of(obj), [FINALIZER], deleting["spec"], cleanup)
    await until(lambda: sgc.get(namespace, "e") is None)
    assert calls == ["cleanup"] * 3
    assert runner.active() == 0


async def test_deletions_start_over_at_once_when_the_spec_changes(
    kube: KubeClient, sgc: Objects, namespace: str
) -> None:
    obj = create(sgc, namespace, "f", [FINALIZER])
    sgc.delete(namespace, "f")
    calls: list[str] = []

    async def blocked() -> Outcome:
        calls.append("blocked")
        return Outcome(3600.0, "DeletionBlocked")  # would wait an hour

    async def abandoned() -> Outcome:
        calls.append("abandoned")
        return Outcome.done()

    runner = Deletions(kube)
    runner.start()
    spec = obj["spec"]
    runner.offer(ref_of(obj), [FINALIZER], spec, blocked)
    await until(lambda: calls == ["blocked"])
    # the same spec again (say, our own status write): no new attempt; a retry would be
    # due at once, so a short wait is enough to see one
    runner.offer(ref_of(obj), [FINALIZER], spec, blocked)
    await asyncio.sleep(0.3)
    assert calls == ["blocked"]
    runner.offer(ref_of(obj), [FINALIZER], {**spec, "deletionPolicy": "Abandon"}, abandoned)
    await until(lambda: sgc.get(namespace, "f") is None)
    assert calls == ["blocked", "abandoned"]


async def test_deletions_ignore_objects_without_our_finalizer_and_stop_when_gone(
    kube: KubeClient, sgc: Objects, namespace: str
) -> None:
    obj = create(sgc, namespace, "g", [OTHER])
    calls: list[str] = []

    async def cleanup() -> Outcome:
        calls.append("cleanup")
        return Outcome(3600.0, "DeletionBlocked")

    runner = Deletions(kube)
    runner.start()
    runner.offer(ref_of(obj), [OTHER], obj["spec"], cleanup)
    assert runner.active() == 0
    runner.offer(ref_of(obj), [OTHER, FINALIZER], obj["spec"], cleanup)
    await until(lambda: calls == ["cleanup"])
    assert runner.active() == 1
    runner.gone(obj["metadata"]["uid"])
    assert runner.active() == 0
    await runner.stop()
