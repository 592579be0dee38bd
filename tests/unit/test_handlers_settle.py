"""`settle`: a reconcile whose report cannot reach the API server is retried with our
backoff (kopf.TemporaryError), never left to kopf's 60-second default for the unexpected."""

from __future__ import annotations

import aiohttp
import kopf
import pytest

from gcpcall.gcp.errors import classify
from gcpcall.handlers.common import settle
from gcpcall.kube import KubeError
from gcpcall.reconcile.objects import ObjectView
from gcpcall.reconcile.outcome import Outcome

OBJ = ObjectView.from_body({"metadata": {"name": "a", "namespace": "n", "uid": "u"}},
                           "ScheduledGcpCall", "scheduledgcpcalls")


async def _raising(exc: BaseException) -> Outcome:
    raise exc


@pytest.mark.parametrize("exc", [
    KubeError(429, "Too Many Requests", "The apiserver is shutting down"),
    KubeError(503, "Service Unavailable", "starting"),
    aiohttp.ServerDisconnectedError(),
    ConnectionRefusedError(111, "Connect call failed"),
])
async def test_an_unreachable_api_server_is_retried_by_our_backoff(
        exc: BaseException, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(kopf.TemporaryError) as caught:
        await settle(OBJ, _raising(exc), retry=0)
    assert caught.value.delay is not None
    assert 0 < caught.value.delay < 60
    # the classified message is the retry's reason: kopf's one line about it says why
    assert str(caught.value) == classify(exc).message
    assert caplog.records == []  # nothing of ours besides it, no traceback


@pytest.mark.parametrize("exc", [ValueError("a bug"), KubeError(422, "Invalid", "bad patch")])
async def test_anything_else_is_left_to_kopf(exc: BaseException) -> None:
    with pytest.raises(type(exc)):
        await settle(OBJ, _raising(exc), retry=0)


async def test_an_outcome_is_turned_into_kopf_s_terms() -> None:
    async def done() -> Outcome:
        return Outcome.done()

    await settle(OBJ, done(), retry=0)  # returns: nothing to retry
    with pytest.raises(kopf.TemporaryError):
        await settle(OBJ, _outcome(Outcome.retry_slow("IdentityNotReady")), retry=0)


async def _outcome(outcome: Outcome) -> Outcome:
    return outcome
