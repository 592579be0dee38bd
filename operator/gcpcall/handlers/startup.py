"""Operator startup and shutdown: kopf settings, clients built once, the sync loop.

Why here: clients (the gRPC channels, the Kubernetes session, the token cache) are built
once into kopf's `memo` and closed on cleanup, never inside a handler; kopf's own
bookkeeping is kept in memory (`handlers.storage`), so `status` carries only our fields
and kopf writes nothing to the objects it handles.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from gcpcall.api.settled import settled
from gcpcall.config import Settings
from gcpcall.gcp.clients import GoogleClients
from gcpcall.gcp.target_calls import TargetCaller
from gcpcall.handlers.storage import HandledInMemory, ProgressInMemory
from gcpcall.kube import KubeClient, load_connection
from gcpcall.reconcile.deps import Deps, build_deps
from gcpcall.relay.follower import OperationFollower
from gcpcall.relay.main import RunningRelay, start_relay

__all__: list[str] = []

log = logging.getLogger(__name__)

KOPF_PREFIX = "operator.gcpcall.dev"


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    """Log kopf in with the same connection our own client uses (`kube.load_connection`).

    kopf runs this in a worker thread (an exec plugin may take a second), and again at
    `expiration` (before an exec plugin's token expires) or after a 401.
    """
    conn = load_connection()
    return kopf.ConnectionInfo(
        server=conn.server,
        ca_path=conn.ca_path,
        insecure=conn.insecure,
        token=conn.current_token(),
        certificate_path=conn.cert_path,
        private_key_path=conn.key_path,
        default_namespace=conn.default_namespace,
        expiration=conn.login_again_at(),
    )


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Deletion is ours (`reconcile.finalizer`): kopf has no deletion handler, so it never
    # adds this finalizer; it names one apart from ours so kopf never touches ours either.
    settings.persistence.finalizer = f"{KOPF_PREFIX}/kopf-finalizer"
    # kopf's bookkeeping in memory (handlers.storage): handling an object costs kopf no
    # write. kopf ignores every annotation under its storage prefix (the retry "touch" it
    # still writes); keep it apart from the users' `gcpcall.dev/run-requested-at`.
    handled = HandledInMemory(prefix=KOPF_PREFIX, settled=settled)
    progress = ProgressInMemory(prefix=KOPF_PREFIX)
    settings.persistence.diffbase_storage = handled
    settings.persistence.progress_storage = progress
    memo.forget = (handled.forget, progress.forget)
    settings.posting.enabled = False  # our own events (observe.events), not kopf's
    settings.watching.server_timeout = 300
    # At most 200 objects in flight; a worker frees its slot 0.5 s after its object's last
    # event (kopf's default of 5 s capped a create burst at about 40 objects a second).
    settings.batching.worker_limit = 200
    settings.batching.idle_timeout = 0.5
    standing = getattr(memo, "deps", None)
    if isinstance(standing, Deps):  # a replica that led after standing by (handlers.replica)
        deps = standing
        ours = deps.settings
    else:
        ours = Settings.from_env()
        clients = GoogleClients.open(ours.endpoints)
        memo.clients = clients
        deps = build_deps(ours, KubeClient(load_connection()), clients.scheduler,
                          clients.tasks)
        memo.deps = deps
    for loop in deps.loops:
        loop.start()
    # One follower of long-running operations, in the operator (the one active replica),
    # whichever relay (here or a Deployment of its own) started them.
    memo.follower_calls = TargetCaller(ours.endpoints)
    memo.follower = OperationFollower(deps, memo.follower_calls)
    memo.follower.start()
    memo.forget = (*memo.forget, memo.follower.forget)
    relay = getattr(memo, "relay", None)
    if isinstance(relay, RunningRelay):  # serving since the standby: now it hands over
        relay.attach(memo.follower)
    else:
        memo.relay = await start_relay(deps, memo.follower)
    log.info(
        "gcpcall-operator started: cluster=%s identity=%s scheduler=%s",
        ours.cluster_name, ours.identity_mode, ours.endpoints.scheduler,
    )


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    deps = getattr(memo, "deps", None)
    if not isinstance(deps, Deps):
        return
    relay = getattr(memo, "relay", None)
    if isinstance(relay, RunningRelay):
        await relay.stop()
    follower = getattr(memo, "follower", None)
    if isinstance(follower, OperationFollower):
        await follower.stop()
        await memo.follower_calls.close()
    for loop in deps.loops:
        await loop.stop()
    clients = getattr(memo, "clients", None)
    if isinstance(clients, GoogleClients):
        await clients.close()
    await deps.events.flush()
    await deps.identities.close()
    await deps.kube.close()
