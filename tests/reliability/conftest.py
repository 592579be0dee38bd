"""The reliability suite runs on the integration suite's stack (API server, emulator,
recording target, operator): one instance of each for the session, from tests/conftest.py."""
