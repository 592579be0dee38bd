"""One counted, rate-limited Google call: what every adapter does around each RPC.

Why shared: both adapters (Cloud Scheduler, Cloud Tasks) take a quota token for the call's
project, make the call, and count it by service, method and result code; doing that in one
place keeps the metrics' labels and the quota accounting the same for both.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

import grpc
from google.api_core import exceptions as gexc

from gcpcall.gcp.recovery import Recovery
from gcpcall.observe.metrics import GOOGLE_CALLS
from gcpcall.ratelimit import QuotaLimiter

__all__ = ["CountedCalls", "code_of", "project_of"]

T = TypeVar("T")


def code_of(exc: BaseException) -> str:
    """The gRPC code name of a failed call, for metrics."""
    if isinstance(exc, gexc.GoogleAPICallError) and exc.grpc_status_code is not None:
        return str(exc.grpc_status_code.name)
    if isinstance(exc, grpc.aio.AioRpcError):
        return str(exc.code().name)
    if isinstance(exc, TimeoutError | ConnectionError):
        return "UNAVAILABLE"  # no answer at all: the service is not reachable
    return "UNKNOWN"


def project_of(name: str) -> str:
    """`projects/<p>/...` -> `<p>` (the quota key)."""
    parts = name.split("/")
    return parts[1] if len(parts) > 1 and parts[0] == "projects" else ""


class CountedCalls:
    """Makes calls to one Google service under per-project quotas, counting each."""

    def __init__(self, service: str, quotas: Mapping[str, float],
                 limiter: QuotaLimiter | None = None) -> None:
        self.service = service
        self.limiter = limiter or QuotaLimiter(dict(quotas))
        self.recovery = Recovery()

    async def __call__(
        self, method: str, name: str, kind: str, fn: Callable[[], Awaitable[T]]
    ) -> T:
        await self.limiter.acquire(project_of(name), kind)
        try:
            result = await fn()
        except Exception as exc:
            code = code_of(exc)
            GOOGLE_CALLS.labels(self.service, method, code).inc()
            self.recovery.failed(code)
            raise
        GOOGLE_CALLS.labels(self.service, method, "OK").inc()
        self.recovery.succeeded()
        return result
