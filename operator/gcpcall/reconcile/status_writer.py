"""The one status writer: each owner writes only its own fields, and nothing is lost.

Why one place: status is written by the spec reconciler, the batched job sync, the task
poller and the relay (`api.ownership` says which writes what). A JSON merge patch replaces
lists whole, so a writer that sends `conditions` or `runs` computed from an old copy of the
status would drop what another writer added since. Here:

- writes to one object are serialized in this process, over the newest status known
  (what the last write returned, or a newer watch event);
- a patch that carries a list is conditional on the resourceVersion it was computed from;
  when someone else wrote in between (another process: a relay replica, a user), the
  answer is 409, the object is read again and the parts are computed anew from it;
- each part of a write is computed by its owner from that base (`Contribute`), and the
  writer refuses a part that touches a field its owner does not own;
- a status patch is sent only when something changed.

The base of each object is kept as compact JSON, decoded when a write or a reader needs it:
it is the one copy of every object's status the operator holds at rest, and as Python
dicts it took 2.4 KB per object (tracemalloc at 3,000 objects, bench/RESULTS.md), several
times its JSON. Decoding it is cheaper than the deep copy a write made of the dicts anyway.

Server-side apply (one field manager per writer) was the other way to get this. It was
measured against this one (bench/RESULTS.md, issue 10): it costs the API server more per
write, and it cannot put two owners' parts into one request, which the GcpTask create needs
to stay at one write per object (P2).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from gcpcall.api.conditions import find_condition, status_patch
from gcpcall.api.ownership import Contribute, Part, apply_parts
from gcpcall.api.tree import plain
from gcpcall.clock import SYSTEM, Clock
from gcpcall.kube import KubeClient, KubeError, ObjectRef
from gcpcall.observe.metrics import OBJECTS, RUNS, STATUS_CONFLICTS, STATUS_PATCHES, TRACKED

__all__ = ["Contribute", "Part", "StatusWriter", "Written"]

log = logging.getLogger(__name__)

_ATTEMPTS = 6
_LISTS = frozenset({"conditions", "runs"})


@dataclass(frozen=True)
class Written:
    """The status before and after a write that changed something."""

    before: Mapping[str, Any]
    after: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class _Base:
    packed: bytes  # the status as compact JSON
    resource_version: str
    generation: int

    @property
    def status(self) -> dict[str, Any]:
        """A fresh decoded copy: the caller may keep or change it."""
        return cast(dict[str, Any], json.loads(self.packed))


def _pack(status: Mapping[str, Any]) -> bytes:
    # `plain`: a status taken from a watch event may hold kopf's read-only mapping views.
    return json.dumps(status, separators=(",", ":"), ensure_ascii=False,
                      default=plain).encode()


@dataclass
class _Gate:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class StatusWriter:
    """Writes status parts per object, over the newest status, serialized per object."""

    def __init__(
        self,
        kube: KubeClient,
        *,
        clock: Clock = SYSTEM,
        on_gone: Callable[[ObjectRef], None] | None = None,
    ) -> None:
        self.kube = kube
        self._now = clock.now
        self.on_gone = on_gone
        self._bases: dict[str, _Base] = {}
        self._gates: dict[str, _Gate] = {}
        self._reasons: dict[str, tuple[str, str, str]] = {}  # uid -> (kind, ns, Ready reason)

    # what is known ----------------------------------------------------------------------
    def seen(self, ref: ObjectRef, body: Mapping[str, Any]) -> None:
        """An object as a watch event showed it. Taken as the base when we have none, or
        when its generation is newer than the one our last write saw (a spec edit since)."""
        meta = body.get("metadata") or {}
        generation = int(meta.get("generation") or 0)
        base = self._bases.get(ref.uid)
        if base is not None and generation <= base.generation:
            return
        self._keep(ref, dict(body.get("status") or {}),
                   str(meta.get("resourceVersion") or ""), generation)

    def known(self, ref: ObjectRef, observed: Mapping[str, Any] | None = None
              ) -> Mapping[str, Any]:
        """The newest status known: our base (decoded afresh), else what the caller
        observed (not a copy: read it, never change it)."""
        base = self._bases.get(ref.uid)
        return base.status if base is not None else (observed or {})

    def may_hold(self, ref: ObjectRef, value: str) -> bool:
        """Whether the newest status known may hold the string `value`: False is certain
        (its compact JSON has no such string), and spares decoding a status to look."""
        base = self._bases.get(ref.uid)
        return base is None or json.dumps(value, ensure_ascii=False).encode() in base.packed

    def generation(self, ref: ObjectRef) -> int | None:
        """The newest generation seen of the object (None: unknown)."""
        base = self._bases.get(ref.uid)
        return base.generation if base is not None else None

    def tracked(self) -> int:
        return len(self._bases)

    def forget(self, ref: ObjectRef) -> None:
        if self._bases.pop(ref.uid, None) is not None:
            TRACKED.labels("status").set(len(self._bases))
        self._count_reason(ref, None)

    def _keep(self, ref: ObjectRef, status: Mapping[str, Any], resource_version: str,
              generation: int) -> None:
        fresh = ref.uid not in self._bases
        self._bases[ref.uid] = _Base(_pack(status), resource_version, generation)
        if fresh:
            TRACKED.labels("status").set(len(self._bases))
        ready = find_condition(status.get("conditions"), "Ready") or {}
        self._count_reason(ref, str(ready["reason"]) if ready.get("reason") else None)

    def _count_reason(self, ref: ObjectRef, reason: str | None) -> None:
        """gcpcall_objects{kind,namespace,reason}: what alerts on Ready reasons read."""
        old = self._reasons.get(ref.uid)
        new = (ref.kind, ref.namespace, reason) if reason else None
        if old == new:
            return
        if old is not None:
            OBJECTS.labels(*old).dec()
            del self._reasons[ref.uid]
        if new is not None:
            OBJECTS.labels(*new).inc()
            self._reasons[ref.uid] = (ref.kind, ref.namespace, str(reason))

    # writing -----------------------------------------------------------------------------
    async def write(
        self, ref: ObjectRef, relay: bool, *parts: Part | Contribute
    ) -> Written | None:
        """Apply `parts` over the newest status; None when nothing changed (or the object
        is gone, which also tells `on_gone`). `relay`: the object has Relay delivery (it
        decides who owns the runs and the task outcome). A part given as a function is
        computed from the status it is merged into."""
        gate = self._gates.setdefault(ref.uid, _Gate())
        gate.users += 1
        try:
            async with gate.lock:
                return await self._write(ref, relay, parts)
        finally:
            gate.users -= 1
            if not gate.users:
                self._gates.pop(ref.uid, None)

    async def _write(
        self, ref: ObjectRef, relay: bool, parts: Sequence[Part | Contribute]
    ) -> Written | None:
        for _ in range(_ATTEMPTS):
            base = self._bases.get(ref.uid) or await self._read(ref)
            if base is None:
                return None
            before = base.status
            after, touched = apply_parts(ref.kind, relay, before, parts, self._now())
            patch = status_patch(before, {k: after.get(k) for k in touched})
            if not patch:
                return None
            precondition = base.resource_version if _LISTS & patch.keys() else None
            try:
                doc = await self.kube.patch_status(ref, patch, resource_version=precondition)
            except KubeError as e:
                if e.status == 404:
                    self._gone(ref)
                    return None
                if e.status != 409:
                    raise
                STATUS_CONFLICTS.labels(ref.kind).inc()
                self.forget(ref)  # read it again, then compute anew
                continue
            STATUS_PATCHES.labels(ref.kind).inc()
            meta = doc.get("metadata") or {}
            status = dict(doc.get("status") or {})
            self._keep(ref, status, str(meta.get("resourceVersion") or ""),
                       int(meta.get("generation") or 0))
            written = Written(before, status)
            _count_runs(ref, written)
            return written
        raise RuntimeError(f"status of {ref.namespace}/{ref.name} kept changing; "
                           f"gave up after {_ATTEMPTS} attempts")

    async def _read(self, ref: ObjectRef) -> _Base | None:
        doc = await self.kube.get_object(ref)
        meta = (doc or {}).get("metadata") or {}
        if doc is None or meta.get("uid") != ref.uid:
            self._gone(ref)
            return None
        self._keep(ref, dict(doc.get("status") or {}), str(meta.get("resourceVersion") or ""),
                   int(meta.get("generation") or 0))
        return self._bases[ref.uid]

    def _gone(self, ref: ObjectRef) -> None:
        self.forget(ref)
        if self.on_gone is not None:
            self.on_gone(ref)


def _count_runs(ref: ObjectRef, written: Written) -> None:
    """gcpcall_runs_total: a run (a GcpTask's attempt) whose outcome was just recorded."""
    key = "lastRun" if ref.kind == "ScheduledGcpCall" else "lastAttempt"
    after = written.after.get(key) or {}
    if not after or after == (written.before.get(key) or {}):
        return
    if key == "lastRun":
        result = after.get("result")
    else:
        code = after.get("code")
        result = None if code is None else ("Succeeded" if code == 0 else "Failed")
    if result in ("Succeeded", "Failed"):
        RUNS.labels(ref.kind, ref.namespace, result).inc()
