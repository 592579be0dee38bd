"""What every reconcile shares: the view of one object, its defaults, its finalizer.

Why a module of its own: the ScheduledGcpCall and GcpTask reconcilers read objects the
same way, resolve the same defaults, hold the same finalizer during their first Google
write and map Google's errors to the same Ready reasons; these helpers used to live in
the ScheduledGcpCall reconciler, which the GcpTask one then had to import.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Awaitable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from gcpcall.api.common import Delivery
from gcpcall.api.observed import parse_time
from gcpcall.api.placement import Defaults
from gcpcall.api.status import ReadyReason
from gcpcall.config import IdentityMode, Settings
from gcpcall.kube import KubeClient, ObjectRef
from gcpcall.reconcile.finalizer import Held, Snapshot, hold
from gcpcall.reconcile.namespaces import NamespaceDefaults

__all__ = [
    "ObjectGone",
    "ObjectView",
    "RecentObjects",
    "defaults_for",
    "holding_finalizer",
    "identity_key",
    "ready_reason",
]

T = TypeVar("T")


@dataclass(frozen=True)
class ObjectView:
    """The parts of one of our objects that a reconcile reads."""

    ref: ObjectRef
    generation: int
    spec: Mapping[str, Any]
    status: Mapping[str, Any]
    annotations: Mapping[str, str]
    created: datetime.datetime | None = None
    # what our finalizer's conditional patches test against; None: not known, read first
    seen: Snapshot | None = None
    body: Mapping[str, Any] | None = None  # the object as observed, for the status writer

    @classmethod
    def from_body(cls, body: Mapping[str, Any], kind: str, plural: str) -> ObjectView:
        meta = body.get("metadata") or {}
        stamp = meta.get("creationTimestamp")
        return cls(
            ref=ObjectRef(kind, plural, meta["namespace"], meta["name"], meta.get("uid", "")),
            generation=int(meta.get("generation") or 0),
            spec=body.get("spec") or {},
            status=body.get("status") or {},
            annotations=meta.get("annotations") or {},
            created=parse_time(stamp) if stamp else None,
            seen=Snapshot.of(meta),
            body=body,
        )

    @property
    def finalizers(self) -> tuple[str, ...]:
        return self.seen.finalizers if self.seen else ()

    @property
    def relay(self) -> bool:
        """Whether the spec asks for Relay delivery (which decides who owns the runs)."""
        return self.spec.get("delivery") == Delivery.RELAY.value


class ObjectGone(Exception):
    """The object was deleted while its first Google write was under way."""


async def holding_finalizer(obj: ObjectView, kube: KubeClient, write: Awaitable[T]) -> T:
    """Run the first Google write of an object while our finalizer is added, in parallel.

    Why in parallel: in sequence, the finalizer patch would sit in front of every new
    object's first call. If the object turns out to be gone or being deleted without our
    finalizer, `ObjectGone` tells the caller to undo what the write made.
    """
    holding = asyncio.ensure_future(hold(obj.ref, obj.seen, kube))
    try:
        result = await write
    finally:
        held = await holding
    if held is not Held.HELD:
        raise ObjectGone(f"{obj.ref.namespace}/{obj.ref.name} is {held.value}")
    return result


async def defaults_for(obj: ObjectView, settings: Settings,
                       namespaces: NamespaceDefaults) -> Defaults:
    return Defaults(
        project=settings.default_project,
        location=settings.default_location,
        service_account_name=settings.default_service_account,
        namespace_annotations=await namespaces.annotations(obj.ref.namespace),
        allow_http=settings.endpoints.allow_http_targets,
        now=obj.created,
    )


def identity_key(namespace: str, service_account: str | None, settings: Settings) -> Hashable:
    """Objects that share credentials share a List call: per KSA, or one for the operator."""
    if settings.identity_mode is IdentityMode.OPERATOR:
        return "operator"
    return (namespace, service_account)


def ready_reason(reason: str) -> ReadyReason:
    """The Ready reason of a classified failure; anything not a Ready reason ("Unexpected",
    "AlreadyExists") is a transient failure as far as users see."""
    try:
        return ReadyReason(reason)
    except ValueError:
        return ReadyReason.GCP_ERROR


class RecentObjects:
    """The newest watched version of each Relay object, for the relay in this process.

    Why: the relay must check every request against the object (uid, delivery, identity)
    and make the call its spec describes; in the operator's process the watch already
    brings every version, so the relay need not GET the object per call. A relay of its
    own (no watch) reads the API server instead.
    """

    def __init__(self) -> None:
        self._bodies: dict[str, Mapping[str, Any]] = {}

    def seen(self, body: Mapping[str, Any]) -> None:
        uid = str((body.get("metadata") or {}).get("uid") or "")
        if not uid:
            return
        if (body.get("spec") or {}).get("delivery") == Delivery.RELAY.value:
            self._bodies[uid] = {k: body[k] for k in ("apiVersion", "kind", "metadata", "spec",
                                                      "status") if k in body}
        else:
            self._bodies.pop(uid, None)

    def get(self, uid: str) -> Mapping[str, Any] | None:
        return self._bodies.get(uid)

    def forget(self, uid: str) -> None:
        self._bodies.pop(uid, None)
