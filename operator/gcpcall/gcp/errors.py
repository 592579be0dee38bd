"""The one classifier of Google errors: retry or not, how fast, and the condition reason.

Why one: every adapter call can fail, and the reconcilers, the status sync and the relay
must agree on what a failure means (architecture.md, "Errors"). Deciding it here, from the
gRPC status code, keeps Ready reasons and retry behaviour identical everywhere, and puts
the one redaction of credentials from error text in a single place.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Literal

import aiohttp
import grpc
from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc

from gcpcall.api.observed import code_for_http_status, rpc_code_name
from gcpcall.kube import KubeError

__all__ = [
    "Backoff",
    "Classification",
    "classify",
    "redact",
]

Backoff = Literal["fast", "slow", "none"]

MAX_MESSAGE = 1024

# code -> (retryable, reason, backoff)
_BY_CODE: dict[str, tuple[bool, str, Backoff]] = {
    # The request itself is wrong: retrying cannot help until the spec changes.
    "INVALID_ARGUMENT": (False, "InvalidSpec", "none"),
    "OUT_OF_RANGE": (False, "InvalidSpec", "none"),
    # A dependency is missing (Cloud Tasks answers CreateTask in a missing queue with
    # FAILED_PRECONDITION). Retried slowly: it may appear without any spec change.
    "FAILED_PRECONDITION": (True, "NotFound", "slow"),
    "NOT_FOUND": (True, "NotFound", "slow"),
    # IAM is fixed outside the cluster: keep trying, gently.
    "PERMISSION_DENIED": (True, "PermissionDenied", "slow"),
    "UNAUTHENTICATED": (True, "PermissionDenied", "slow"),
    "ALREADY_EXISTS": (False, "AlreadyExists", "none"),
    "UNIMPLEMENTED": (False, "GcpError", "none"),
    # Transient: exponential backoff with jitter.
    "UNAVAILABLE": (True, "GcpError", "fast"),
    "DEADLINE_EXCEEDED": (True, "GcpError", "fast"),
    "RESOURCE_EXHAUSTED": (True, "GcpError", "fast"),
    "INTERNAL": (True, "GcpError", "fast"),
    "ABORTED": (True, "GcpError", "fast"),
    "UNKNOWN": (True, "GcpError", "fast"),
    "CANCELLED": (True, "GcpError", "fast"),
    "DATA_LOSS": (True, "GcpError", "fast"),
}

_SECRETS = (
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), r"\1 [REDACTED]"),
    (re.compile(r"\bya29\.[A-Za-z0-9._-]+"), "[REDACTED]"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), "[REDACTED]"),
    (re.compile(r"(?i)(\"?(?:access_token|id_token|refresh_token|client_secret|"
                r"subject_token|assertion)\"?\s*[:=]\s*\"?)[^\"\s,&}]+"), r"\1[REDACTED]"),
)


@dataclass(frozen=True)
class Classification:
    """`reason` is a Ready reason (InvalidSpec, NotFound, PermissionDenied, GcpError,
    IdentityNotReady), or AlreadyExists (the caller decides what it means), or Unexpected
    (not a Google error: a bug or an unforeseen failure). `code` is the gRPC code name,
    for metrics and events."""

    retryable: bool
    reason: str
    message: str
    backoff: Backoff
    code: str = "UNKNOWN"


def redact(text: str) -> str:
    """Remove anything that looks like a credential, and keep the text short."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def _code_and_detail(exc: BaseException) -> tuple[str, str] | None:
    if isinstance(exc, gexc.GoogleAPICallError):
        status = exc.grpc_status_code
        if status is not None:
            code = str(status.name)
        else:
            # a REST-transport error without a gRPC code: AIP-193's mapping
            http = int(exc.code or 0)
            code = rpc_code_name(code_for_http_status(http)) if http >= 400 else "UNKNOWN"
        return code, str(exc.message)
    if isinstance(exc, grpc.RpcError):
        code_fn = getattr(exc, "code", None)
        details_fn = getattr(exc, "details", None)
        status_code = code_fn() if callable(code_fn) else None
        detail = details_fn() if callable(details_fn) else ""
        name = status_code.name if isinstance(status_code, grpc.StatusCode) else "UNKNOWN"
        return str(name), str(detail or "")
    return None


def classify(exc: BaseException) -> Classification:
    """Classify an exception raised by a Google client call (or around one)."""
    if isinstance(exc, gexc.RetryError) and exc.cause is not None:
        return classify(exc.cause)
    found = _code_and_detail(exc)
    if found is not None:
        code, detail = found
        retryable, reason, backoff = _BY_CODE.get(code, (True, "GcpError", "fast"))
        return Classification(retryable, reason, redact(f"{code}: {detail}"), backoff, code)
    if isinstance(exc, auth_exc.TransportError):
        return Classification(True, "GcpError", redact(f"token endpoint unreachable: {exc}"),
                              "fast", "UNAVAILABLE")
    if isinstance(exc, auth_exc.GoogleAuthError):
        # RefreshError, DefaultCredentialsError...: the identity could not get a token.
        return Classification(True, "IdentityNotReady",
                              redact(f"{type(exc).__name__}: {exc}"), "slow", "UNAUTHENTICATED")
    if isinstance(exc, KubeError):
        # The Kubernetes API server answered with an error around a Google call (a status
        # write, a Secret read): transient unless it says the request itself is wrong.
        retryable = exc.status in (409, 429) or exc.status >= 500
        return Classification(True, "GcpError" if retryable else "Unexpected",
                              redact(f"Kubernetes API: {exc}"),
                              "fast" if retryable else "slow", "UNAVAILABLE")
    if isinstance(exc, TimeoutError | asyncio.TimeoutError | OSError | aiohttp.ClientError):
        # OSError covers ConnectionError and aiohttp's ClientConnectorError; aiohttp's
        # ServerDisconnectedError is neither: the API server or an endpoint is unreachable.
        return Classification(True, "GcpError", redact(f"{type(exc).__name__}: {exc}"),
                              "fast", "UNAVAILABLE")
    return Classification(True, "Unexpected", redact(f"{type(exc).__name__}: {exc}"),
                          "slow", "UNKNOWN")
