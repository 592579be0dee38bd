"""Google errors injected by the emulator: transient ones retried with backoff, permanent
ones reported and retried slowly."""

from __future__ import annotations

import datetime
import itertools
import time

import pytest
from tests.integration.conftest import Emulator, Objects, condition, wait_for
from tests.integration.test_scheduled_lifecycle import ready, sample

pytestmark = pytest.mark.usefixtures("operator")


def _times(emulator: Emulator, method: str, code: str) -> list[datetime.datetime]:
    return [datetime.datetime.fromisoformat(c["time"]) for c in emulator.calls(method)
            if c["code"] == code]


def test_unavailable_is_retried_with_growing_backoff_until_it_works(
    sgc: Objects, namespace: str, emulator: Emulator
) -> None:
    already = len(_times(emulator, "CreateJob", "UNAVAILABLE"))
    emulator.fault("CreateJob", "UNAVAILABLE", 1.0)
    try:
        sgc.create(namespace, sample("flaky"))
        obj = wait_for(lambda: (o := sgc.get(namespace, "flaky")) and
                       condition(o, "Ready").get("reason") == "GcpError" and o,
                       what="GcpError reported")
        assert "UNAVAILABLE" in condition(obj, "Ready")["message"]
        failures = wait_for(
            lambda: (t := _times(emulator, "CreateJob", "UNAVAILABLE")[already:]) and
            len(t) >= 4 and t, timeout=40, what="four failed attempts")
    finally:
        emulator.clear_faults()
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(failures)]
    # exponential backoff with jitter: the third gap is always longer than the first
    assert gaps[2] > gaps[0]
    obj = ready(sgc, namespace, "flaky")
    assert obj["status"]["jobName"]


def test_permission_denied_is_reported_and_retried_slowly(
    sgc: Objects, namespace: str, emulator: Emulator
) -> None:
    before = len(emulator.calls("CreateJob"))
    emulator.fault("CreateJob", "PERMISSION_DENIED", 1.0)
    try:
        sgc.create(namespace, sample("denied"))
        obj = wait_for(lambda: (o := sgc.get(namespace, "denied")) and
                       condition(o, "Ready").get("reason") == "PermissionDenied" and o,
                       what="PermissionDenied reported")
        assert condition(obj, "Ready")["status"] == "False"
        assert "PERMISSION_DENIED" in condition(obj, "Ready")["message"]
        time.sleep(3)  # a fast retry would have come back by now (it starts at about 1 s)
        assert len(emulator.calls("CreateJob")) == before + 1
    finally:
        emulator.clear_faults()
        sgc.delete(namespace, "denied")
    wait_for(lambda: sgc.get(namespace, "denied") is None, what="deleted")
