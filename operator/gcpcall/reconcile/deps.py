"""What a reconcile needs, built once at startup and handed to every reconcile.

Why a plain dataclass: the reconcilers take their collaborators explicitly (the kopf
handlers pull it from `memo`), so tests and benchmarks can build the same object around a
test API server and the emulator, and nothing reaches for module-level clients.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gcpcall.config import Settings
from gcpcall.gcp.identity import IdentityResolver
from gcpcall.gcp.scheduler import SchedulerAdapter
from gcpcall.gcp.tasks import TasksAdapter
from gcpcall.kube import KubeClient
from gcpcall.observe.events import EventRecorder
from gcpcall.reconcile.finalizer import Deletions
from gcpcall.reconcile.status_writer import StatusWriter

if TYPE_CHECKING:  # the loops import Deps for their own annotations
    from gcpcall.reconcile.sync import ScheduledSync
    from gcpcall.reconcile.task_poller import TaskPoller

__all__ = ["Deps", "NamespaceDefaults"]

_NS_TTL = 30.0


@dataclass
class NamespaceDefaults:
    """`gcpcall.dev/project` and `gcpcall.dev/location` of namespaces, cached briefly."""

    kube: KubeClient
    _cache: dict[str, tuple[float, dict[str, str]]] = field(default_factory=dict)

    async def annotations(self, namespace: str) -> dict[str, str]:
        hit = self._cache.get(namespace)
        if hit and time.monotonic() - hit[0] < _NS_TTL:
            return hit[1]
        doc: dict[str, Any] | None = await self.kube.get_namespace(namespace)
        annotations = dict(((doc or {}).get("metadata") or {}).get("annotations") or {})
        self._cache[namespace] = (time.monotonic(), annotations)
        return annotations


@dataclass
class Deps:
    settings: Settings
    kube: KubeClient
    identities: IdentityResolver
    scheduler: SchedulerAdapter
    status: StatusWriter
    events: EventRecorder
    namespaces: NamespaceDefaults
    deletions: Deletions
    tasks: TasksAdapter | None = None  # Cloud Tasks (GcpTask); None where no kind needs it
    # the background loops, built once the rest exists (they take the Deps themselves)
    scheduled_sync: ScheduledSync | None = None
    task_poller: TaskPoller | None = None
