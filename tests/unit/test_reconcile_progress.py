"""Progress reasons: Creating/Updating only for a write slow enough to be seen; Deleting
for a delete that retrying can fix, DeletionBlocked for one a person must fix."""

from __future__ import annotations

import asyncio

import pytest
from google.api_core import exceptions as gexc

from gcpcall.api.status import ReadyReason
from gcpcall.gcp.identity import IdentityNotReady
from gcpcall.reconcile.progress import deletion_failure, reporting_if_slow


class Reports:
    def __init__(self) -> None:
        self.count = 0

    async def __call__(self) -> None:
        self.count += 1


async def test_a_fast_write_reports_nothing() -> None:
    reports = Reports()

    async def write() -> str:
        return "job"

    assert await reporting_if_slow(write(), reports, after=10.0) == "job"
    assert reports.count == 0


async def test_a_slow_write_reports_once_and_still_returns_its_result() -> None:
    reports = Reports()
    release = asyncio.Event()

    async def write() -> str:
        await release.wait()
        return "job"

    reported = asyncio.Event()

    async def report() -> None:
        await reports()
        reported.set()

    pending = asyncio.ensure_future(reporting_if_slow(write(), report, after=0.01))
    await reported.wait()
    assert not pending.done()
    release.set()
    assert await pending == "job"
    assert reports.count == 1


async def test_a_failing_report_does_not_fail_the_write() -> None:
    async def report() -> None:
        raise ConnectionError("API server away")

    async def write() -> str:
        await asyncio.sleep(0.05)
        return "job"

    assert await reporting_if_slow(write(), report, after=0.01) == "job"


async def test_the_write_s_error_is_raised() -> None:
    async def write() -> str:
        raise gexc.ServiceUnavailable("down")

    with pytest.raises(gexc.ServiceUnavailable):
        await reporting_if_slow(write(), Reports(), after=1.0)


async def test_cancelling_the_caller_cancels_the_write() -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def write() -> str:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    caller = asyncio.ensure_future(reporting_if_slow(write(), Reports(), after=30.0))
    await started.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert cancelled.is_set()


@pytest.mark.parametrize(("exc", "reason"), [
    (gexc.ServiceUnavailable("down"), ReadyReason.DELETING),
    (gexc.ResourceExhausted("quota"), ReadyReason.DELETING),
    (gexc.PermissionDenied("no"), ReadyReason.DELETION_BLOCKED),
    (IdentityNotReady("ServiceAccount", "no GSA annotation"), ReadyReason.DELETION_BLOCKED),
])
def test_deletion_failure(exc: Exception, reason: ReadyReason) -> None:
    got, message = deletion_failure(exc)
    assert got is reason
    assert message  # the classifier's message (the identity step's for IdentityNotReady)

