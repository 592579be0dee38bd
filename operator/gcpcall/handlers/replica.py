"""One replica with leader election on: a standby until it holds the Lease, then the operator.

Why: with more than one replica only the leader may run kopf's handlers and our loops (two
would sync the same objects and write to Google twice). A standby still serves the relay
(every replica does, so a rolling update or a failover never leaves Cloud Scheduler without
an answer) and answers the liveness probe. When the Lease is won, kopf starts with the
clients and deps the relay already uses (one token cache, one status writer) and the relay
is handed the operation follower. A leader that loses the Lease exits at once (status 1)
and Kubernetes starts it again as a standby: nothing half-stopped keeps acting. On SIGTERM
the leader stops kopf and releases the Lease, so a standby leads within its retry period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Sequence
from urllib.parse import urlsplit

import kopf
from aiohttp import web

from gcpcall.config import Settings
from gcpcall.gcp.clients import GoogleClients
from gcpcall.handlers.common import OperatorMemo
from gcpcall.handlers.leader import Elector, LeaseSettings
from gcpcall.kube import KubeClient, load_connection
from gcpcall.observe.metrics import LEADER
from gcpcall.reconcile.deps import build_deps
from gcpcall.relay.main import start_relay

__all__ = ["run_elected"]

log = logging.getLogger(__name__)


async def _standby_health(liveness: str | None) -> web.AppRunner | None:
    """The liveness endpoint while kopf (which serves it when leading) is not running."""
    if not liveness:
        return None
    url = urlsplit(liveness)

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"role": "standby"})

    app = web.Application()
    app.router.add_get(url.path or "/", health)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, url.hostname or "0.0.0.0", url.port or 80).start()  # noqa: S104
    return runner


def _stop_now() -> None:
    """The Lease is lost: stop acting this instant (the kubelet restarts the container)."""
    LEADER.set(0)
    sys.stderr.flush()
    os._exit(1)


async def run_elected(settings: Settings, *, namespaces: Sequence[str],
                      liveness: str | None) -> None:
    """Stand by (relay and liveness only) until this replica holds the Lease, then run the
    operator until it stops; release the Lease on the way out."""
    clients = GoogleClients.open(settings.endpoints)
    deps = build_deps(settings, KubeClient(load_connection()), clients.scheduler, clients.tasks)
    relay = await start_relay(deps)
    # Its own connection: renewals never queue behind the operator's status writes.
    lease_kube = KubeClient(load_connection())
    elector = Elector(lease_kube, LeaseSettings(
        name=settings.lease_name, namespace=settings.lease_namespace,
        duration=settings.lease_duration_seconds, renew=settings.lease_renew_seconds,
        retry=settings.lease_retry_seconds))
    LEADER.set(0)
    health = await _standby_health(liveness)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    acquiring = asyncio.create_task(elector.acquire())
    stop_wait = asyncio.create_task(stopping.wait())
    await asyncio.wait({acquiring, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
    for signum in (signal.SIGTERM, signal.SIGINT):  # kopf installs its own
        loop.remove_signal_handler(signum)
    stop_wait.cancel()
    if health is not None:
        await health.cleanup()
    if not acquiring.done():  # stopped while standing by
        acquiring.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await acquiring
        if relay is not None:
            await relay.stop()
        await deps.identities.close()
        await clients.close()
        await deps.kube.close()
        await lease_kube.close()
        return
    LEADER.set(1)
    keeping = asyncio.create_task(elector.keep(_stop_now))
    try:
        await kopf.operator(
            clusterwide=not namespaces, namespaces=namespaces,
            liveness_endpoint=liveness or None, standalone=True,
            # startup (handlers.startup) takes these over instead of building its own
            memo=OperatorMemo(deps=deps, clients=clients, relay=relay),
        )
    finally:
        keeping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeping
        await elector.release()
        await lease_kube.close()
        LEADER.set(0)
