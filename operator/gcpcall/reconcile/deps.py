"""What a reconcile needs, built complete at startup and handed to every reconcile.

Why one immutable object built in one step: the reconcilers, the background loops and
the relay take their collaborators explicitly (the kopf handlers pull them from `memo`),
so tests and benchmarks can build the same object around a test API server and the
emulator, and nothing reaches for module-level clients. The loops get only the parts
they use, so none of them imports this module.
"""

from __future__ import annotations

from dataclasses import dataclass

from gcpcall.clock import SYSTEM, Clock
from gcpcall.config import Settings
from gcpcall.gcp.identity import IdentityResolver
from gcpcall.gcp.scheduler import SchedulerAdapter
from gcpcall.gcp.tasks import TasksAdapter
from gcpcall.kube import KubeClient, ObjectRef
from gcpcall.observe.events import EventRecorder
from gcpcall.reconcile.converge import JobConverger
from gcpcall.reconcile.expiry import Expiries
from gcpcall.reconcile.finalizer import Deletions
from gcpcall.reconcile.loop import BackgroundLoop
from gcpcall.reconcile.namespaces import NamespaceDefaults
from gcpcall.reconcile.objects import RecentObjects
from gcpcall.reconcile.status_writer import StatusWriter
from gcpcall.reconcile.sync import ScheduledSync
from gcpcall.reconcile.task_poller import TaskPoller
from gcpcall.reconcile.task_queues import QueueCache, QueueWaits

__all__ = ["Deps", "build_deps"]

_QUEUE_TTL_CAP = 60.0  # how long a queue's state (paused, max attempts) is trusted


@dataclass(frozen=True)
class Deps:
    settings: Settings
    clock: Clock
    kube: KubeClient
    identities: IdentityResolver
    scheduler: SchedulerAdapter
    tasks: TasksAdapter
    status: StatusWriter
    events: EventRecorder
    namespaces: NamespaceDefaults
    converger: JobConverger
    sync: ScheduledSync
    queues: QueueCache
    queue_waits: QueueWaits
    expiries: Expiries
    poller: TaskPoller
    deletions: Deletions
    recent: RecentObjects

    @property
    def loops(self) -> tuple[BackgroundLoop, ...]:
        return (self.sync, self.poller, self.queue_waits, self.expiries, self.deletions)

    def forget(self, ref: ObjectRef) -> None:
        """The object is gone (a DELETED event, or a 404 on a write): drop it everywhere."""
        self.sync.untrack(ref)
        self.poller.forget(ref.uid)
        self.queue_waits.forget(ref.uid)
        self.expiries.forget(ref.uid)
        self.deletions.gone(ref.uid)
        self.recent.forget(ref.uid)
        self.status.forget(ref)


def build_deps(
    settings: Settings, kube: KubeClient, scheduler: SchedulerAdapter, tasks: TasksAdapter,
    *, identities: IdentityResolver | None = None, clock: Clock = SYSTEM,
) -> Deps:
    """Everything the reconcilers use, with the background loops (not started)."""
    identities = identities or IdentityResolver(settings, kube)
    status = StatusWriter(kube, clock=clock)
    events = EventRecorder(kube, per_second=settings.events_per_second)
    converger = JobConverger(scheduler, events, settings.cluster_name)
    settle = max(0.2, settings.run_settle_seconds)
    cap = max(settle, settings.drift_check_seconds)
    queues = QueueCache(tasks, clock, ttl=min(_QUEUE_TTL_CAP, cap))
    expiries = Expiries(kube, clock)
    deps = Deps(
        settings=settings, clock=clock, kube=kube, identities=identities,
        scheduler=scheduler, tasks=tasks, status=status, events=events,
        namespaces=NamespaceDefaults(kube, clock), converger=converger,
        sync=ScheduledSync(settings, scheduler, identities, status, converger, kube, clock),
        queues=queues,
        queue_waits=QueueWaits(tasks, identities, queues, clock, first=settle, cap=cap),
        expiries=expiries,
        poller=TaskPoller(tasks, identities, status, events, queues, expiries, clock,
                          settle=settle, cap=cap),
        deletions=Deletions(kube, clock),
        recent=RecentObjects(),
    )
    status.on_gone = deps.forget  # a write that finds the object gone forgets it everywhere
    return deps
