"""Starting the relay: inside the operator process, or alone (`gcpcall-operator relay`).

Why both: one pod's relay is enough for most clusters, and it shares the operator's token
cache and status writer. Where more calls arrive than one pod can make, the same image runs
the relay alone, as its own Deployment with any number of replicas: each replica holds
nothing but its caches, and status writes are safe from several at once (the status writer
makes list writes conditional on the version they were computed from).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Sequence

from prometheus_client import start_http_server

from gcpcall.config import Settings, SettingsError, warn_unknown_variables
from gcpcall.gcp.clients import GoogleClients
from gcpcall.gcp.id_tokens import IdTokenVerifier
from gcpcall.gcp.target_calls import TargetCaller
from gcpcall.kube import KubeClient, load_connection
from gcpcall.observe.logs import setup_logging
from gcpcall.reconcile.deps import Deps, build_deps
from gcpcall.reconcile.relay_target import relay_url_problem
from gcpcall.relay.follower import OperationFollower
from gcpcall.relay.server import RelayServer
from gcpcall.relay.service import Relay

__all__ = ["RunningRelay", "run_relay", "start_relay"]

log = logging.getLogger(__name__)


class RunningRelay:
    def __init__(self, server: RelayServer, verifier: IdTokenVerifier,
                 caller: TargetCaller) -> None:
        self.server = server
        self._verifier = verifier
        self._caller = caller

    def attach(self, follower: OperationFollower) -> None:
        """Hand started operations to `follower` from now on (a standby became leader)."""
        self.server.relay.follower = follower

    async def stop(self) -> None:
        await self.server.stop()
        await self._verifier.close()
        await self._caller.close()


async def start_relay(deps: Deps, follower: OperationFollower | None = None
                      ) -> RunningRelay | None:
    """The relay on its port, when this process serves one (a relay URL and a port).
    `follower`: the operator's operation follower, when the relay runs beside it."""
    settings = deps.settings
    if not settings.relay_port:
        return None
    problem = relay_url_problem(settings.relay_url,
                                allow_http=settings.endpoints.allow_http_targets)
    if problem is not None:
        if settings.relay_url:
            log.error("%s; Relay objects are refused until it is fixed", problem)
        return None
    verifier = IdTokenVerifier(settings.endpoints.oidc_certs, settings.oidc_issuer)
    caller = TargetCaller(settings.endpoints)
    server = RelayServer(Relay(deps, verifier, caller, follower), settings.relay_address,
                         settings.relay_port)
    await server.start()
    return RunningRelay(server, verifier, caller)


async def _serve(settings: Settings) -> None:
    clients = GoogleClients.open(settings.endpoints)
    deps = build_deps(settings, KubeClient(load_connection()), clients.scheduler, clients.tasks)
    running = await start_relay(deps)
    if running is None:
        raise SystemExit("gcpcall-operator relay: set GCPCALL_RELAY_URL (an https URL) and "
                         "GCPCALL_RELAY_PORT")
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    try:
        await stopping.wait()
    finally:
        await running.stop()
        await deps.events.flush()
        await deps.identities.close()
        await clients.close()
        await deps.kube.close()
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(signum)


def run_relay(argv: Sequence[str]) -> int:
    """`gcpcall-operator relay`: the relay alone (settings from GCPCALL_* as for `run`)."""
    parser = argparse.ArgumentParser(prog="gcpcall-operator relay")
    parser.add_argument("--metrics-port", type=int, default=9090, help="0 disables metrics")
    parser.add_argument("--metrics-address", default="0.0.0.0",  # noqa: S104 - a pod's port
                        help="address the metrics endpoint listens on")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(list(argv))
    try:
        settings = Settings.from_env(warn_unknown=False)
    except SettingsError as e:  # one line and exit status 2, as for `run`
        print(f"gcpcall-operator relay: {e}", file=sys.stderr)
        return 2
    setup_logging(args.verbose, settings.log_format)
    warn_unknown_variables(os.environ)
    if args.metrics_port:
        start_http_server(args.metrics_port, addr=args.metrics_address)
    asyncio.run(_serve(settings))
    return 0
