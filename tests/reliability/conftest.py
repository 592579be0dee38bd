"""The reliability suite runs on the integration suite's stack (API server, emulator,
recording target, operator): its fixtures are shared from there."""

from tests.integration.conftest import emulator, gtask, operator, sgc, target

__all__ = ["emulator", "gtask", "operator", "sgc", "target"]
