"""kopf's bookkeeping in memory (`handlers.storage`): what kopf is told it last handled.

kopf compares `fetch()` (what was handled) with `build()` (what the object is now): equal
means nothing to do (or resume, on the first listing); None means "new"; anything else
means "changed". These are the answers the operator relies on.
"""

from __future__ import annotations

from typing import Any

import kopf

from gcpcall.handlers.storage import HandledInMemory, ProgressInMemory


def body(uid: str = "u1", generation: int = 1, observed: int | None = None,
         reason: str = "UpToDate", **spec: Any) -> kopf.Body:
    status: dict[str, Any] = {"conditions": [{"type": "Ready", "reason": reason}]}
    if observed is not None:
        status["observedGeneration"] = observed
    return kopf.Body({
        "apiVersion": "gcpcall.dev/v1alpha1", "kind": "ScheduledGcpCall",
        "metadata": {"name": "x", "namespace": "n", "uid": uid, "generation": generation},
        "spec": {"schedule": "5 * * * *", **spec},
        "status": status,
    })


def settled_when_observed(raw: Any) -> bool:
    meta, status = raw.get("metadata") or {}, raw.get("status") or {}
    return bool(status.get("observedGeneration") == meta.get("generation"))


def storage() -> HandledInMemory:
    return HandledInMemory(prefix="operator.gcpcall.dev", settled=settled_when_observed)


def test_unknown_and_unsettled_is_new() -> None:
    assert storage().fetch(body=body()) is None


def test_unknown_but_settled_by_its_status_is_as_handled() -> None:
    s, b = storage(), body(observed=1)
    assert s.fetch(body=b) == s.build(body=b)


def test_handled_is_unchanged_until_the_spec_changes() -> None:
    s, b = storage(), body()
    s.store(body=b, patch=kopf.Patch(), essence=s.build(body=b))
    assert s.fetch(body=b) == s.build(body=b)
    edited = body(generation=2, schedule="6 * * * *")
    assert s.fetch(body=edited) not in (None, s.build(body=edited))


def test_store_writes_nothing_to_the_object_and_forget_drops_the_record() -> None:
    s, b = storage(), body()
    patch = kopf.Patch()
    s.store(body=b, patch=patch, essence=s.build(body=b))
    assert not patch
    s.forget("u1")
    assert s.fetch(body=b) is None


def test_a_large_body_is_kept_as_a_digest() -> None:
    s = storage()
    essence = s.build(body=body(target={"body": {"json": {"blob": "x" * 100_000}}}))
    assert len(str(essence)) < 1_000


def test_progress_lives_in_memory_per_object_and_handler() -> None:
    p, b, other = ProgressInMemory(prefix="operator.gcpcall.dev"), body(), body(uid="u2")
    patch = kopf.Patch()
    record = kopf.ProgressRecord(retries=2, success=False, failure=False)
    p.store(key="h", record=record, body=b, patch=patch)
    assert not patch
    assert p.fetch(key="h", body=b) == record
    assert p.fetch(key="h", body=other) is None
    p.purge(key="h", body=b, patch=patch)
    assert p.fetch(key="h", body=b) is None
    assert not patch


def test_the_essence_is_kopfs_own_without_copying_the_status() -> None:
    """The essence built from the kept part is the one kopf builds from the whole object:
    spec, labels and the annotations it compares, and no status or system metadata."""
    raw: dict[str, Any] = dict(body(observed=1))
    raw["metadata"] = {**raw["metadata"], "labels": {"team": "a"}, "resourceVersion": "9",
                       "managedFields": [{"manager": "gcpcall-sync"}],
                       "annotations": {"note": "kept",
                                       "kubectl.kubernetes.io/last-applied-configuration": "{}"}}
    raw["status"] = {**raw["status"], "runs": [{"httpStatus": 200}] * 50}
    whole = kopf.AnnotationsDiffBaseStorage(prefix="operator.gcpcall.dev",
                                            key="last-handled-configuration")
    assert storage().build(body=kopf.Body(raw)) == whole.build(body=kopf.Body(raw))
    assert storage().build(body=kopf.Body(raw)) == {
        "spec": {"schedule": "5 * * * *"},
        "metadata": {"labels": {"team": "a"}, "annotations": {"note": "kept"}},
    }


def test_fetch_and_the_build_after_it_agree_and_a_new_body_is_built_again() -> None:
    s, b = storage(), body(observed=1)
    assert s.fetch(body=b) is s.build(body=b)  # one essence per event, not two
    edited = body(observed=1, schedule="6 * * * *")
    assert s.build(body=edited) == {"spec": {"schedule": "6 * * * *"}}
