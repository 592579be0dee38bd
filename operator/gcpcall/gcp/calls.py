"""One counted, rate-limited Google call: what every adapter does around each RPC.

Why shared: both adapters (Cloud Scheduler, Cloud Tasks) take a quota token for the call's
project, make the call, and count it by service, method and result code; doing that in one
place keeps the metrics' labels and the quota accounting the same for both. So do the two
answers every adapter shapes alike: NOT_FOUND where "absent" is a normal answer
(`or_none`, `deleted`), and a List read page by page (`pages`).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Protocol, TypeVar

import grpc
from google.api_core import exceptions as gexc

from gcpcall.gcp.recovery import Recovery
from gcpcall.observe.metrics import GOOGLE_CALLS
from gcpcall.ratelimit import QuotaLimiter

__all__ = ["CountedCalls", "code_of", "project_of"]

T = TypeVar("T")
ItemT = TypeVar("ItemT")
PageT = TypeVar("PageT", bound="_Page")


class _Page(Protocol):
    """What a List response page has in common: the token of the next page ("" at the end)."""

    @property
    def next_page_token(self) -> str: ...


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

    async def or_none(
        self, method: str, name: str, kind: str, fn: Callable[[], Awaitable[T]]
    ) -> T | None:
        """The call's result, or None when Google answers NOT_FOUND: for the reads where
        "absent" is a normal answer (a finished task is deleted by Cloud Tasks)."""
        try:
            return await self(method, name, kind, fn)
        except gexc.NotFound:
            return None

    async def deleted(
        self, method: str, name: str, kind: str, fn: Callable[[], Awaitable[object]]
    ) -> bool:
        """A delete: True when it deleted, False when it was already gone (that counts as
        done for every caller)."""

        async def delete() -> bool:
            await fn()
            return True

        return await self.or_none(method, name, kind, delete) or False

    async def pages(
        self, method: str, parent: str, kind: str, page: Callable[[str], Awaitable[PageT]],
        items: Callable[[PageT], Iterable[ItemT]],
    ) -> list[ItemT]:
        """Every item of a List, `page(token)` for each page from "" on, each page a counted
        call under the quota. By hand, not the client library's pager: its async iterator
        fetches the later pages itself, past the quota and the count."""
        out: list[ItemT] = []
        token = ""
        while True:
            response = await self(method, parent, kind, functools.partial(page, token))
            out.extend(items(response))
            token = response.next_page_token
            if not token:
                return out
