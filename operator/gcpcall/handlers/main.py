"""`gcpcall-operator run`: start kopf with our handlers and a metrics endpoint.

Why not `kopf run`: the operator is one console script with its own flags (namespaces,
probes, metrics, log format), and the handler modules are imported here so that the
registry is complete before kopf starts. The settings are checked here, before anything
starts: a bad `GCPCALL_*` value is one line on stderr and exit status 2, not a traceback.
With `GCPCALL_LEADER_ELECTION` the process first stands by for the Lease (`replica.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

import kopf
from prometheus_client import start_http_server

from gcpcall.config import LogFormat, Settings, SettingsError, warn_unknown_variables
from gcpcall.handlers import gcptask, scheduled, startup
from gcpcall.handlers.common import OperatorMemo
from gcpcall.handlers.replica import run_elected
from gcpcall.observe.logs import setup_logging
from gcpcall.observe.metrics import LEADER

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
    parser.add_argument("--log-format", choices=[f.value for f in LogFormat], default=None,
                        help="text, or json (one object a line); default: $GCPCALL_LOG_FORMAT, "
                             "else text")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(list(argv))
    try:
        settings = Settings.from_env(warn_unknown=False)
    except SettingsError as e:
        print(f"gcpcall-operator run: {e}", file=sys.stderr)
        return 2
    setup_logging(args.verbose, args.log_format or settings.log_format)
    warn_unknown_variables(os.environ)
    if args.metrics_port:
        start_http_server(args.metrics_port, addr=args.metrics_address)
    if settings.leader_election:  # more than one replica: only the Lease holder acts
        asyncio.run(run_elected(settings, namespaces=args.namespace,
                                liveness=args.liveness or None))
        return 0
    LEADER.set(1)
    asyncio.run(
        kopf.operator(
            clusterwide=not args.namespace,
            namespaces=args.namespace,
            liveness_endpoint=args.liveness or None,
            standalone=True,
            memo=OperatorMemo(),
        )
    )
    return 0
