"""The one classifier: every gRPC code, REST-only errors, auth errors, and redaction."""

from __future__ import annotations

import grpc
import pytest
from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc

from gcpcall.gcp.errors import Classification, classify, redact
from gcpcall.kube import KubeError

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


def test_api_server_errors_around_a_call() -> None:
    """aiohttp's ClientConnectorError is an OSError, not a ConnectionError: an API server
    that is down for a moment must be transient, not "Unexpected" (kopf's 60 s retry)."""
    refused = OSError(111, "Connect call failed ('127.0.0.1', 6443)")
    assert triple(classify(refused)) == (True, "GcpError", "fast")
    for status in (409, 429, 500, 503):
        assert triple(classify(KubeError(status, "x", "y"))) == (True, "GcpError", "fast")
    assert classify(KubeError(422, "Invalid", "bad patch")).reason == "Unexpected"


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


