"""The `gcpcall-operator` command: `run` the operator, the `relay` alone, the `emulator`, or the
`demo`.

Why one entry point: the Helm chart, the demo and the tests start the same program the same
way; subcommands keep each mode's flags apart.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="gcpcall-operator")
    parser.add_argument("command", choices=["run", "relay", "emulator", "demo"],
                        help="what to run")
    ns, rest = parser.parse_known_args(args[:1])
    rest = args[1:]
    if ns.command == "run":
        from gcpcall.handlers.main import run_operator

        return run_operator(rest)
    if ns.command == "relay":
        from gcpcall.relay.main import run_relay

        return run_relay(rest)
    if ns.command == "emulator":
        from gcpcall.emulator.server import main as emulator_main

        return emulator_main(rest)
    from gcpcall.demo import main as demo_main

    return demo_main(rest)
