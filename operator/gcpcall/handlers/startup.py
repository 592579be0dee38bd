"""Operator startup and shutdown: kopf settings, clients built once, the sync loop.

Why here: clients (the gRPC channels, the Kubernetes session, the token cache) are built
once into kopf's `memo` and closed on cleanup, never inside a handler; kopf's own
bookkeeping goes into annotations under our prefix so `status` carries only our fields.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from typing import Any

import grpc
import kopf

from gcpcall.config import Settings
from gcpcall.gcp.channels import open_channel
from gcpcall.gcp.identity import IdentityResolver
from gcpcall.gcp.scheduler import SchedulerAdapter
from gcpcall.gcp.tasks import TasksAdapter
from gcpcall.kube import KubeClient, load_connection
from gcpcall.observe.events import EventRecorder
from gcpcall.reconcile.deps import Deps, NamespaceDefaults
from gcpcall.reconcile.finalizer import Deletions
from gcpcall.reconcile.status_writer import StatusWriter
from gcpcall.reconcile.sync import ScheduledSync
from gcpcall.reconcile.task_poller import TaskPoller

__all__ = ["build_deps"]

log = logging.getLogger(__name__)

KOPF_PREFIX = "operator.gcpcall.dev"


class CompactDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's last-handled spec, with the request body replaced by its digest.

    Why: kopf keeps the whole spec in an annotation, and annotations hold at most 256 KB in
    all, while a request body may be up to 1 MB. With the full body in it, the annotation
    patch fails, and with it every later patch of the object, including the one that
    removes the finalizer, so the object could never be deleted. A digest still changes
    whenever the body does, which is all the change detection needs.
    """

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        essence = super().build(body=body, extra_fields=extra_fields)
        spec: dict[str, Any] = essence.get("spec") or {}
        target = spec.get("target")
        if isinstance(target, dict) and "body" in target:
            raw = json.dumps(target["body"], sort_keys=True, separators=(",", ":"))
            target["body"] = {"sha256": hashlib.sha256(raw.encode()).hexdigest()}
        return essence


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    """Log kopf in with the same connection our own client uses."""
    conn = load_connection()
    return kopf.ConnectionInfo(
        server=conn.server,
        ca_path=conn.ca_path,
        insecure=conn.insecure,
        token=conn.current_token(),
        certificate_path=conn.cert_path,
        private_key_path=conn.key_path,
        default_namespace=conn.default_namespace,
    )


def build_deps(settings: Settings, kube: KubeClient) -> tuple[Deps, list[grpc.aio.Channel]]:
    """Everything the reconcilers use, and the channels to close at shutdown."""
    scheduler_channel = open_channel(settings.endpoints.scheduler, settings.endpoints)
    deps = Deps(
        settings=settings,
        kube=kube,
        identities=IdentityResolver(settings, kube),
        scheduler=SchedulerAdapter(scheduler_channel),
        status=StatusWriter(kube),
        events=EventRecorder(kube),
        namespaces=NamespaceDefaults(kube),
        deletions=Deletions(kube),
    )
    tasks_channel = open_channel(settings.endpoints.tasks, settings.endpoints)
    deps.tasks = TasksAdapter(tasks_channel)
    deps.scheduled_sync = ScheduledSync(deps)
    deps.task_poller = TaskPoller(deps, deps.tasks)
    return deps, [scheduler_channel, tasks_channel]


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Deletion is ours (`reconcile.finalizer`): kopf has no deletion handler, so it never
    # adds this finalizer; it names one apart from ours so kopf never touches ours either.
    settings.persistence.finalizer = f"{KOPF_PREFIX}/kopf-finalizer"
    # kopf ignores every annotation under the prefix its storage uses; keep it apart from
    # the users' `gcpcall.dev/run-requested-at`, or run-now requests would go unseen.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=KOPF_PREFIX
    )
    settings.persistence.diffbase_storage = CompactDiffBaseStorage(
        prefix=KOPF_PREFIX, key="last-handled-configuration"
    )
    settings.posting.enabled = False  # our own events (observe.events), not kopf's
    settings.watching.server_timeout = 300
    # At most 200 objects in flight; a worker frees its slot 0.5 s after its object's last
    # event (kopf's default of 5 s capped a create burst at about 40 objects a second).
    settings.batching.worker_limit = 200
    settings.batching.idle_timeout = 0.5
    ours = Settings.from_env()
    deps, memo.channels = build_deps(ours, KubeClient(load_connection()))
    memo.deps = deps
    for loop in (deps.scheduled_sync, deps.task_poller):
        if loop is not None:
            loop.start()
    log.info(
        "gcpcall-operator started: cluster=%s identity=%s scheduler=%s",
        ours.cluster_name, ours.identity_mode, ours.endpoints.scheduler,
    )


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    deps = getattr(memo, "deps", None)
    if not isinstance(deps, Deps):
        return
    for loop in (deps.scheduled_sync, deps.task_poller):
        if loop is not None:
            await loop.stop()
    await deps.deletions.stop()
    for channel in getattr(memo, "channels", []):
        await channel.close()
    await deps.events.flush()
    await deps.identities.close()
    await deps.kube.close()
