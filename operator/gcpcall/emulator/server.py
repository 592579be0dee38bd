"""The emulator process: one gRPC server for the Google services, one HTTP server beside it.

Why: tests start the emulator in-process on ephemeral ports, the demo and users start it
as `gcpcall-operator emulator`; both need the same assembly of the shared core (clock,
dispatcher, token issuer, faults, call log), the Cloud Scheduler and Cloud Tasks halves
(gRPC), and the HTTP routes: certs and tokeninfo, the identity services (IAM Credentials,
STS, metadata server), the Google APIs simulator (`googleapis`) and the admin API.

This module is also where each service meets its admin routes: the admin modules see
their service through a protocol (or import it), services never import their admin
modules, and `Emulator` passes one to the other.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

import grpc
from aiohttp import web

from gcpcall.emulator import googleapis_admin, scheduler_admin, tasks_admin
from gcpcall.emulator.admin import add_core_routes, parse_status_code
from gcpcall.emulator.core import CallLog, Clock, Dispatcher, FaultInjector, TokenIssuer
from gcpcall.emulator.googleapis import GoogleApis
from gcpcall.emulator.identity_services import IdentityServices
from gcpcall.emulator.rpcauth import RpcAuth
from gcpcall.emulator.rpcauth import add_routes as add_auth_routes
from gcpcall.emulator.scheduler import SchedulerService
from gcpcall.emulator.tasks import TasksService

__all__ = ["DEFAULT_GRPC_PORT", "DEFAULT_HTTP_PORT", "Emulator", "main", "parse_args"]

DEFAULT_GRPC_PORT = 8123
DEFAULT_HTTP_PORT = 8124

log = logging.getLogger(__name__)


class Emulator:
    """Cloud Scheduler v1 and Cloud Tasks v2 over gRPC, plus the emulator's HTTP routes.

    Attributes shared by both service halves: `clock`, `dispatcher`, `tokens`, `faults`,
    `calls`, `auth` (with `require_auth`, every RPC needs a bearer token the identity
    services minted, and attaching a token service account needs actAs on it; see
    `rpcauth`). After `start()`: `grpc_port`, `http_port`, `grpc_target`, `http_url`.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        host_map: Mapping[str, str] | None = None,
        issuer: str = "https://accounts.google.com",
        tokens: TokenIssuer | None = None,
        host: str = "127.0.0.1",
        require_auth: bool = False,
        googleapis_routes: bool = True,
    ) -> None:
        self.host = host
        self.clock = Clock()
        self.dispatcher = Dispatcher(host_map, clock=self.clock)
        self.tokens = tokens or TokenIssuer(issuer)
        self.faults = FaultInjector(seed)
        self.calls = CallLog()
        self.identity = IdentityServices(self.tokens, call_log=self.calls)
        # bearer tokens on the Scheduler/Tasks RPCs, checked against the identity services
        self.auth = RpcAuth(self.identity.iam, required=require_auth)
        self.scheduler = SchedulerService(self)
        self.tasks = TasksService(self)
        self.googleapis = GoogleApis(self)
        self._googleapis_routes = googleapis_routes
        self.grpc_port = 0
        self.http_port = 0
        self.app = web.Application()
        add_core_routes(self.app, self)
        scheduler_admin.add_routes(self.app, self.scheduler)
        tasks_admin.add_routes(self.app, self.tasks)
        self.identity.add_routes(self.app)  # IAM Credentials, STS, metadata server
        add_auth_routes(self.app, self.auth)
        self.googleapis.add_routes(self.app)
        googleapis_admin.add_routes(self.app, self.googleapis)
        self._grpc_server: Any = None
        self._http_runner: web.AppRunner | None = None

    @property
    def grpc_target(self) -> str:
        """host:port for a gRPC channel (or a client's api_endpoint)."""
        return f"{_url_host(self.host)}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        """Base URL of the HTTP routes, e.g. http://127.0.0.1:8124."""
        return f"http://{_url_host(self.host)}:{self.http_port}"

    def services(self) -> list[SchedulerService | TasksService]:
        """The service halves running in this emulator."""
        return [self.scheduler, self.tasks]

    async def start(self, grpc_port: int = 0, http_port: int = 0) -> None:
        """Bind both servers (port 0 picks a free one) and start the service loops."""
        server = grpc.aio.server()
        server.add_generic_rpc_handlers(tuple(s.generic_handler() for s in self.services()))
        bound = server.add_insecure_port(f"{_url_host(self.host)}:{grpc_port}")
        if not bound:
            raise OSError(f"cannot bind gRPC port {grpc_port} on {self.host}")
        await server.start()
        self._grpc_server, self.grpc_port = server, bound
        runner = web.AppRunner(self.app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, http_port)
        await site.start()
        self._http_runner = runner
        self.http_port = _bound_port(runner, http_port)
        if self._googleapis_routes:
            routed = self.dispatcher.host_map()
            for host, url in self.googleapis.host_routes(self.http_url).items():
                if host not in routed:
                    self.dispatcher.set_host_route(host, url)
        for service in self.services():
            await service.start()

    async def stop(self) -> None:
        """Stop the service loops and both servers; close outgoing connections."""
        for service in self.services():
            await service.stop()
        if self._grpc_server is not None:
            await self._grpc_server.stop(grace=0.2)
            self._grpc_server = None
        if self._http_runner is not None:
            await self._http_runner.cleanup()
            self._http_runner = None
        await self.identity.close()
        await self.dispatcher.close()

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _bound_port(runner: web.AppRunner, requested: int) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return requested


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The command line of `gcpcall-operator emulator`."""
    parser = argparse.ArgumentParser(
        prog="gcpcall-operator emulator",
        description="Run the local Google Cloud emulator (Cloud Scheduler v1, Cloud Tasks v2, "
        "IAM Credentials, STS, and a Google APIs simulator).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--grpc-port", type=int, default=DEFAULT_GRPC_PORT, help="0: any")
    parser.add_argument("--http-port", type=int, default=DEFAULT_HTTP_PORT, help="0: any")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault injector")
    parser.add_argument(
        "--issuer", default="https://accounts.google.com", help="`iss` of minted ID tokens"
    )
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="METHOD=CODE:RATE[:LATENCY]",
        help='e.g. "GetJob=UNAVAILABLE:0.5" or "*=INTERNAL:0.1:0.2"; repeatable',
    )
    parser.add_argument(
        "--host-map",
        action="append",
        default=[],
        metavar="HOST=URL[,HOST=URL...]",
        help="route https://HOST/... to URL, e.g. compute.googleapis.com=http://127.0.0.1:8089",
    )
    parser.add_argument(
        "--require-auth",
        action="store_true",
        help="refuse Scheduler/Tasks RPCs without a valid bearer token (UNAUTHENTICATED) and "
        "enforce iam.serviceAccounts.actAs on the token service account of jobs and tasks",
    )
    parser.add_argument(
        "--googleapis-declare",
        action="append",
        default=[],
        metavar="JSON|@FILE",
        help="declare Google APIs simulator resources at start: a JSON document as POST "
        "/emulator/v1/googleapis/declarations takes, inline or @file; repeatable",
    )
    parser.add_argument(
        "--no-googleapis-routes",
        dest="googleapis_routes",
        action="store_false",
        help="do not route compute/cloudbuild/dataflow.googleapis.com to the simulator",
    )
    parser.add_argument(
        "--token-lifetime",
        type=int,
        default=None,
        metavar="SECONDS",
        help="issue OAuth access tokens (STS, generateAccessToken, metadata) for at most this "
        "long; Google's last 3600 s (compresses time for token-refresh benchmarks)",
    )
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(list(argv))
    try:
        args.faults = [_parse_fault(text) for text in args.fault]
        args.hosts = _parse_host_map(args.host_map)
        args.declarations = [_parse_declarations(text) for text in args.googleapis_declare]
    except ValueError as error:
        parser.error(str(error))
    return args


def _parse_fault(text: str) -> tuple[str, grpc.StatusCode, float, float]:
    method, sep, rest = text.partition("=")
    parts = rest.split(":")
    if not sep or not method or len(parts) not in (2, 3):
        raise ValueError(f"--fault {text!r}: expected METHOD=CODE:RATE[:LATENCY]")
    latency = float(parts[2]) if len(parts) == 3 else 0.0
    return method, parse_status_code(parts[0]), float(parts[1]), latency


def _parse_declarations(text: str) -> dict[str, Any]:
    """One --googleapis-declare value: inline JSON, or @path of a JSON file."""
    source = text
    if text.startswith("@"):
        try:
            with open(text[1:], encoding="utf-8") as file:
                source = file.read()
        except OSError as error:
            raise ValueError(f"--googleapis-declare {text}: {error}") from error
    try:
        doc = json.loads(source)
    except ValueError as error:
        raise ValueError(f"--googleapis-declare {text!r}: not JSON: {error}") from error
    if not isinstance(doc, dict):
        raise ValueError(f"--googleapis-declare {text!r}: expected a JSON object")
    return doc


def _parse_host_map(values: Sequence[str]) -> dict[str, str]:
    hosts: dict[str, str] = {}
    for value in values:
        for item in filter(None, (part.strip() for part in value.split(","))):
            host, sep, url = item.partition("=")
            if not sep or not host or not url.startswith(("http://", "https://")):
                raise ValueError(f"--host-map {item!r}: expected HOST=http(s)://...")
            hosts[host] = url
    return hosts


async def serve(args: argparse.Namespace) -> None:
    """Run until SIGTERM or SIGINT, printing the bound ports as one JSON line when ready."""
    emulator = Emulator(
        seed=args.seed,
        host_map=args.hosts,
        issuer=args.issuer,
        tokens=TokenIssuer(args.issuer, max_access_lifetime=args.token_lifetime),
        host=args.host,
        require_auth=args.require_auth,
        googleapis_routes=args.googleapis_routes,
    )
    for method, code, rate, latency in args.faults:
        emulator.faults.set(method, code, rate, latency)
    for doc in args.declarations:
        try:
            emulator.googleapis.declare(doc)
        except ValueError as error:
            raise SystemExit(f"gcpcall-operator emulator: --googleapis-declare: {error}") from None
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await emulator.start(args.grpc_port, args.http_port)
    try:
        ready = {"grpc_port": emulator.grpc_port, "http_port": emulator.http_port}
        print(json.dumps(ready), flush=True)
        await stopping.wait()
    finally:
        await emulator.stop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(signum)


def main(argv: Sequence[str] | None = None) -> int:
    """`gcpcall-operator emulator [--grpc-port N] [--http-port N] [--require-auth] ...`."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr)
    asyncio.run(serve(args))
    return 0
