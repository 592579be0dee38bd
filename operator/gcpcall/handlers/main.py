"""`gcpcall-operator run`: start kopf with our handlers and a metrics endpoint.

Why not `kopf run`: the operator is one console script with its own flags (namespaces,
probes, metrics), and the handler modules are imported here so that the registry is
complete before kopf starts.
"""

from __future__ import annotations

import argparse
import asyncio
import random
from collections.abc import Sequence

import kopf
from prometheus_client import start_http_server

from gcpcall.handlers import gcptask, scheduled, startup
from gcpcall.observe.logs import setup_logging

__all__ = ["run_operator"]

_HANDLER_MODULES = (gcptask, scheduled, startup)  # imported for their kopf registrations


def run_operator(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="gcpcall-operator run")
    parser.add_argument("--namespace", action="append", default=[],
                        help="watch only these namespaces (repeatable); default: all")
    parser.add_argument("--liveness", default="http://0.0.0.0:8080/healthz",
                        help="kopf liveness endpoint URL")
    parser.add_argument("--metrics-port", type=int, default=9090, help="0 disables metrics")
    parser.add_argument("--metrics-address", default="0.0.0.0",  # noqa: S104 - a pod's port
                        help="address the metrics endpoint listens on")
    parser.add_argument("--peering", default=None,
                        help="kopf peering object name (with more than one replica)")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(list(argv))
    setup_logging(args.verbose)
    if args.metrics_port:
        start_http_server(args.metrics_port, addr=args.metrics_address)
    asyncio.run(
        kopf.operator(
            clusterwide=not args.namespace,
            namespaces=args.namespace,
            liveness_endpoint=args.liveness or None,
            standalone=args.peering is None,
            peering_name=args.peering,
            # kopf pauses every peer of equal priority; a random one makes one leader
            priority=random.randint(1, 10_000) if args.peering else 0,  # noqa: S311
        )
    )
    return 0
