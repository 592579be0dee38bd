"""The one classifier: every gRPC code, REST-only errors, auth errors, and redaction."""

from __future__ import annotations

import random

import grpc
import pytest
from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc

from gcpcall.gcp.errors import (
    FAST_CAP_SECONDS,
    SLOW_CAP_SECONDS,
    Classification,
    backoff_delay,
    classify,
    redact,
)

EXPECTED = {
    grpc.StatusCode.INVALID_ARGUMENT: (False, "InvalidSpec", "none"),
    grpc.StatusCode.OUT_OF_RANGE: (False, "InvalidSpec", "none"),
    grpc.StatusCode.FAILED_PRECONDITION: (True, "NotFound", "slow"),
    grpc.StatusCode.NOT_FOUND: (True, "NotFound", "slow"),
    grpc.StatusCode.PERMISSION_DENIED: (True, "PermissionDenied", "slow"),
    grpc.StatusCode.UNAUTHENTICATED: (True, "PermissionDenied", "slow"),
    grpc.StatusCode.ALREADY_EXISTS: (False, "AlreadyExists", "none"),
    grpc.StatusCode.UNIMPLEMENTED: (False, "GcpError", "none"),
    grpc.StatusCode.UNAVAILABLE: (True, "GcpError", "fast"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (True, "GcpError", "fast"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (True, "GcpError", "fast"),
    grpc.StatusCode.INTERNAL: (True, "GcpError", "fast"),
    grpc.StatusCode.ABORTED: (True, "GcpError", "fast"),
    grpc.StatusCode.UNKNOWN: (True, "GcpError", "fast"),
    grpc.StatusCode.CANCELLED: (True, "GcpError", "fast"),
    grpc.StatusCode.DATA_LOSS: (True, "GcpError", "fast"),
}


def triple(c: Classification) -> tuple[bool, str, str]:
    return c.retryable, c.reason, c.backoff


def test_every_code_is_classified() -> None:
    assert set(EXPECTED) == set(grpc.StatusCode) - {grpc.StatusCode.OK}


@pytest.mark.parametrize("code", list(EXPECTED))
def test_google_api_core_errors(code: grpc.StatusCode) -> None:
    exc = gexc.from_grpc_status(code, "the detail")
    c = classify(exc)
    assert triple(c) == EXPECTED[code]
    assert c.code == code.name
    assert c.message == f"{code.name}: the detail"


class FakeRpcError(grpc.RpcError):
    """What grpc.aio raises (AioRpcError has the same code()/details() interface)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@pytest.mark.parametrize("code", list(EXPECTED))
def test_raw_grpc_errors(code: grpc.StatusCode) -> None:
    c = classify(FakeRpcError(code, "raw"))
    assert triple(c) == EXPECTED[code]
    assert c.message == f"{code.name}: raw"


def test_real_aio_rpc_error() -> None:
    exc = grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(),
                               grpc.aio.Metadata(), details="connection refused")
    assert triple(classify(exc)) == (True, "GcpError", "fast")


@pytest.mark.parametrize(
    ("status", "expected"),
    [(400, "InvalidSpec"), (401, "PermissionDenied"), (403, "PermissionDenied"),
     (404, "NotFound"), (429, "GcpError"), (503, "GcpError")],
)
def test_rest_errors_without_a_grpc_code(status: int, expected: str) -> None:
    exc = gexc.GoogleAPICallError("rest")
    exc.code = status
    assert classify(exc).reason == expected


def test_retry_error_classifies_its_cause() -> None:
    exc = gexc.RetryError("gave up", gexc.PermissionDenied("no"))
    assert triple(classify(exc)) == (True, "PermissionDenied", "slow")


def test_auth_and_network_errors() -> None:
    assert triple(classify(auth_exc.RefreshError("sts refused"))) == (
        True, "IdentityNotReady", "slow")
    assert triple(classify(auth_exc.TransportError("dns"))) == (True, "GcpError", "fast")
    assert triple(classify(TimeoutError())) == (True, "GcpError", "fast")
    assert triple(classify(ConnectionResetError())) == (True, "GcpError", "fast")
    assert triple(classify(KeyError("bug"))) == (True, "Unexpected", "slow")


def test_messages_never_carry_tokens() -> None:
    access = "ya29.a0AfH6SMBx-secret_token"
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    exc = gexc.PermissionDenied(
        f"denied for Authorization: Bearer {access}; id {jwt}; "
        '{"access_token": "abc123", "id_token":"def456"} subject_token=ghi789&x=1')
    message = classify(exc).message
    for secret in (access, jwt, "abc123", "def456", "ghi789", "secret_token"):
        assert secret not in message
    assert "PERMISSION_DENIED: denied for Authorization: Bearer [REDACTED]" in message
    assert classify(auth_exc.RefreshError(f"bad token {access}")).message.count("[REDACTED]") == 1
    assert len(redact("x" * 5000)) == 1024


def test_backoff_delays() -> None:
    rng = random.Random(1)
    fast = classify(gexc.ServiceUnavailable("x"))
    slow = classify(gexc.PermissionDenied("x"))
    never = classify(gexc.InvalidArgument("x"))
    assert backoff_delay(0, never, rng) is None
    assert backoff_delay(3, classify(gexc.AlreadyExists("x")), rng) is None
    for attempt in range(12):
        d = backoff_delay(attempt, fast, rng)
        ceiling = min(FAST_CAP_SECONDS, 2.0**attempt)
        assert d is not None
        assert ceiling / 2 <= d <= ceiling
    assert backoff_delay(100, fast, rng) is not None
    big = [backoff_delay(50, slow, rng) for _ in range(50)]
    assert all(d is not None and SLOW_CAP_SECONDS / 2 <= d <= SLOW_CAP_SECONDS for d in big)
    assert len(set(big)) > 1  # jittered
    first = backoff_delay(0, slow, rng)
    assert first is not None
    assert 30.0 <= first <= 60.0
    # Deterministic for a given rng seed.
    assert backoff_delay(4, fast, random.Random(9)) == backoff_delay(4, fast, random.Random(9))
