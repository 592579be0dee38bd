"""Our finalizer: held while a Google resource may exist, released once cleanup is done.

Why not kopf's finalizer: kopf adds its finalizer in a patch of its own and calls the
creation handler only on the watch event that patch causes, which put a full API round trip
in front of every new object's first Google call. Here the finalizer is added by a
conditional JSON patch *in parallel with* the first Google write (`hold`), and deletion
is run from the watch events by `Deletions`, which retries each object's cleanup with its
own backoff and then removes the finalizer (`release`). kopf is left with no deletion
handler, so it neither adds nor removes a finalizer of its own.

Both patches are conditional (a `test` of what we last saw), so a finalizer someone else
added or removed in between is never overwritten; on a failed test we read the object
again and retry.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gcpcall.clock import SYSTEM, Clock
from gcpcall.kube import KubeClient, KubeError, ObjectRef
from gcpcall.observe.metrics import TRACKED
from gcpcall.reconcile.loop import BackgroundLoop
from gcpcall.reconcile.outcome import Outcome, backoff_delay

__all__ = ["FINALIZER", "Deletions", "Held", "hold", "release"]

log = logging.getLogger(__name__)

FINALIZER = "gcpcall.dev/finalizer"

_ATTEMPTS = 4  # conditional patches raced by other writers before we give up this round


class Held(enum.Enum):
    HELD = "held"  # the object carries our finalizer
    GONE = "gone"  # the object no longer exists (or is another object by now)
    DELETING = "deleting"  # being deleted without our finalizer: none can be added


@dataclass(frozen=True)
class Snapshot:
    """What a conditional finalizer patch tests against."""

    finalizers: tuple[str, ...]
    deleting: bool

    @classmethod
    def of(cls, meta: Mapping[str, Any]) -> Snapshot:
        """From an object's metadata."""
        return cls(tuple(meta.get("finalizers") or ()), bool(meta.get("deletionTimestamp")))


async def _fresh(ref: ObjectRef, kube: KubeClient) -> Snapshot | None:
    doc = await kube.get_object(ref)
    meta: dict[str, Any] = (doc or {}).get("metadata") or {}
    if doc is None or (ref.uid and meta.get("uid") != ref.uid):
        return None
    return Snapshot.of(meta)


def _same_object(ref: ObjectRef) -> list[dict[str, Any]]:
    """A test that fails on a new object of the same name (deleted and created again)."""
    return [{"op": "test", "path": "/metadata/uid", "value": ref.uid}] if ref.uid else []


def _retryable(e: KubeError) -> bool:
    # 422: a failed `test` (someone wrote in between); 409: a conflicting write.
    return e.status in (409, 422)


async def hold(ref: ObjectRef, seen: Snapshot | None, kube: KubeClient) -> Held:
    """Add our finalizer unless the object already has it. `seen` is the object as the
    caller saw it (None: unknown, read it first)."""
    snap = seen
    for _ in range(_ATTEMPTS):
        if snap is None:
            snap = await _fresh(ref, kube)
            if snap is None:
                return Held.GONE
        if FINALIZER in snap.finalizers:
            return Held.HELD
        if snap.deleting:
            return Held.DELETING
        ops: list[dict[str, Any]]
        if snap.finalizers:
            ops = [
                {"op": "test", "path": "/metadata/finalizers", "value": list(snap.finalizers)},
                {"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER},
            ]
        else:  # no list yet. "add" would replace one written since: test that there is
            # none (a missing member tests equal to null), not the resourceVersion, which
            # our own status writes, made in parallel, change.
            ops = [
                {"op": "test", "path": "/metadata/finalizers", "value": None},
                {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
            ]
        try:
            await kube.patch_json(ref, _same_object(ref) + ops)
            return Held.HELD
        except KubeError as e:
            if e.status == 404:
                return Held.GONE
            if not _retryable(e):
                raise
        snap = None
    raise RuntimeError(f"could not add {FINALIZER} to {ref.namespace}/{ref.name}: "
                       "the object kept changing")


async def release(ref: ObjectRef, seen: Sequence[str] | None, kube: KubeClient) -> None:
    """Remove our finalizer (and only ours). `seen`: the finalizers as last observed."""
    finalizers = None if seen is None else tuple(seen)
    for _ in range(_ATTEMPTS):
        if finalizers is None:
            snap = await _fresh(ref, kube)
            if snap is None:
                return
            finalizers = snap.finalizers
        if FINALIZER not in finalizers:
            return
        remaining = [f for f in finalizers if f != FINALIZER]
        ops = [
            {"op": "test", "path": "/metadata/finalizers", "value": list(finalizers)},
            {"op": "replace", "path": "/metadata/finalizers", "value": remaining},
        ]
        try:
            await kube.patch_json(ref, _same_object(ref) + ops)
            return
        except KubeError as e:
            if e.status == 404:
                return
            if not _retryable(e):
                raise
        finalizers = None
    raise RuntimeError(f"could not remove {FINALIZER} from {ref.namespace}/{ref.name}: "
                       "the object kept changing")


Cleanup = Callable[[], Awaitable[Outcome]]


@dataclass
class _Deleting:
    ref: ObjectRef
    cleanup: Cleanup
    finalizers: tuple[str, ...]
    spec: Any
    due: float = 0.0
    attempt: int = 0
    changed: bool = False  # the spec changed while a cleanup ran: try again at once
    task: asyncio.Task[None] | None = None


class Deletions(BackgroundLoop):
    """One cleanup at a time per deleting object that carries our finalizer.

    The watch offers every event of a deleting object: the first starts the cleanup, later
    ones replace what it works from, and a changed spec (say, `deletionPolicy` switched to
    Abandon on a blocked deletion) makes a waiting retry due at once. When the cleanup says
    done, the finalizer goes and the object with it. A restart loses nothing: the initial
    listing offers every object still being deleted.
    """

    name = "deletions"

    def __init__(self, kube: KubeClient, clock: Clock = SYSTEM) -> None:
        super().__init__(clock)
        self.kube = kube
        self._active: dict[str, _Deleting] = {}

    def offer(self, ref: ObjectRef, finalizers: Sequence[str], spec: Any,
              cleanup: Cleanup) -> None:
        if FINALIZER not in finalizers:
            return
        current = self._active.get(ref.uid)
        if current is not None:
            changed = spec != current.spec
            current.cleanup, current.finalizers, current.spec = cleanup, tuple(finalizers), spec
            if changed:
                current.changed = True
                current.due = self.clock.monotonic()
                self.wake()
            return
        self._active[ref.uid] = _Deleting(ref, cleanup, tuple(finalizers), spec,
                                          due=self.clock.monotonic())
        TRACKED.labels(self.name).set(len(self._active))
        self.wake()

    def gone(self, uid: str) -> None:
        """The object is gone from the API: stop whatever still runs for it."""
        entry = self._active.pop(uid, None)
        TRACKED.labels(self.name).set(len(self._active))
        if entry is not None and entry.task is not None:
            entry.task.cancel()

    def active(self) -> int:
        return len(self._active)

    tracked = active

    async def stop(self) -> None:
        await super().stop()
        tasks = [e.task for e in self._active.values() if e.task is not None]
        self._active.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def step(self) -> float:
        now = self.clock.monotonic()
        for entry in list(self._active.values()):
            if entry.task is None and entry.due <= now:
                entry.changed = False
                entry.task = asyncio.create_task(self._attempt(entry),
                                                 name=f"delete {entry.ref.name}")
        waiting = [e.due for e in self._active.values() if e.task is None]
        return min(waiting, default=float("inf"))

    async def _attempt(self, entry: _Deleting) -> None:
        try:
            try:
                outcome = await entry.cleanup()
                if outcome.retry_after is None:
                    await release(entry.ref, entry.finalizers, self.kube)
                    if self._active.get(entry.ref.uid) is entry:
                        del self._active[entry.ref.uid]
                        TRACKED.labels(self.name).set(len(self._active))
                    return
                reason = outcome.reason
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("cleanup failed", extra={"object": entry.ref})
                outcome, reason = Outcome(0.0), "Unexpected"
            delay = outcome.retry_after or backoff_delay(entry.attempt)
            entry.attempt += 1
            log.info("deletion waits %.0fs (%s)", delay, reason or "retrying",
                     extra={"object": entry.ref})
            entry.due = self.clock.monotonic() + (0.0 if entry.changed else delay)
        finally:
            entry.task = None
            self.wake()
