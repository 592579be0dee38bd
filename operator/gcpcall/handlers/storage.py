"""kopf's bookkeeping kept in memory, so that handling an object costs kopf no API write.

Why: kopf stores, on every object it handles, the spec it last handled (an annotation
holding the whole spec) and each handler's progress (retries, delays), and marks the
object as kopf-managed: at least one more patch per object and per change, on top of our
own status write. With a thousand objects created at once that patch was a third of the
API server's work. Here:

- the last-handled record is a digest per object uid, in memory; when it is missing (after
  a restart) the object's own status stands in for it (`api.settled`): a settled object is
  resumed, any other is handled again as new, which our idempotent reconciles allow;
- handler progress lives in memory too (a restart starts the retry count afresh); only a
  retry that is due "touches" the object with kopf's dummy annotation, as before, since
  that write is what wakes kopf up for it.

The request body is replaced by its digest in the essence (`build`): kopf's essences
are compared and hashed on every event, and a body may be a megabyte. kopf's own `build`
deep-copies the whole object before it drops the status and most metadata (the
managedFields of every status writer, the runs): it is given only what it keeps, and the
essence `fetch` built is reused by the `build` kopf calls next for the same body.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

import kopf

__all__ = ["HandledInMemory", "ProgressInMemory"]

_CHANGED = "gcpcall.dev/changed-since-handled"


def _uid(body: kopf.Body) -> str:
    return str(body.metadata.uid or "")


def _digest(essence: Mapping[str, Any]) -> str:
    raw = json.dumps(essence, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(raw.encode()).hexdigest()


class HandledInMemory(kopf.AnnotationsDiffBaseStorage):
    """What kopf last handled per object: a digest in memory, the status after a restart."""

    def __init__(self, *, prefix: str, settled: Callable[[Mapping[str, Any]], bool]) -> None:
        super().__init__(prefix=prefix, key="last-handled-configuration")
        self._settled = settled
        self._handled: dict[str, str] = {}
        self._last: tuple[kopf.Body, kopf.BodyEssence] | None = None  # fetch's, for build

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        fields = list(extra_fields or ())
        if not fields and self._last is not None and self._last[0] is body:
            return self._last[1]  # kopf copies an essence before it changes one
        essence = super().build(body=_kept_part(body) if not fields else body,
                                extra_fields=fields)
        spec: dict[str, Any] = essence.get("spec") or {}
        target = spec.get("target")
        if isinstance(target, dict) and "body" in target:
            target["body"] = {"sha256": _digest({"body": target["body"]})}
        return essence

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        current = self.build(body=body)
        self._last = (body, current)
        handled = self._handled.get(_uid(body))
        if handled is None:
            return current if self._settled(body) else None
        if handled == _digest(current):
            return current
        # Anything that differs from `current` makes kopf call the update handlers.
        return cast(kopf.BodyEssence, {"spec": {_CHANGED: handled}})

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        self._handled[_uid(body)] = _digest(essence)

    def forget(self, uid: str) -> None:
        self._handled.pop(uid, None)


def _kept_part(body: kopf.Body) -> kopf.Body:
    """The part of an object kopf's essence keeps: no status, metadata only the labels
    and annotations (kopf then drops the annotations it does not compare)."""
    meta = body.get("metadata") or {}
    light = {k: v for k, v in body.items() if k != "status"}
    light["metadata"] = {k: meta[k] for k in ("labels", "annotations") if k in meta}
    return kopf.Body(cast(kopf.RawBody, light))


class ProgressInMemory(kopf.AnnotationsProgressStorage):
    """Each handler's progress (started, retries, delayed until) per object, in memory."""

    def __init__(self, *, prefix: str) -> None:
        super().__init__(prefix=prefix)
        self._records: dict[str, dict[str, kopf.ProgressRecord]] = {}

    def fetch(self, *, key: str, body: kopf.Body) -> kopf.ProgressRecord | None:
        return self._records.get(_uid(body), {}).get(key)

    def store(
        self, *, key: str, record: kopf.ProgressRecord, body: kopf.Body, patch: kopf.Patch
    ) -> None:
        self._records.setdefault(_uid(body), {})[key] = kopf.ProgressRecord(**record)

    def purge(self, *, key: str, body: kopf.Body, patch: kopf.Patch) -> None:
        records = self._records.get(_uid(body))
        if records is not None:
            records.pop(key, None)
            if not records:
                del self._records[_uid(body)]

    def forget(self, uid: str) -> None:
        self._records.pop(uid, None)
