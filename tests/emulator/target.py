"""A local HTTP target that records what the emulator sends it, for dispatch tests.

Why: Cloud Scheduler jobs and Cloud Tasks tasks end in an HTTP request; the conformance
suite checks that request (method, path, headers, body, token) and the emulator's reaction
to answers (status codes in a chosen sequence, a target that never answers). Both halves'
tests use this one recorder.

Use (the `target` fixture in conftest.py starts one on 127.0.0.1 in the emulator's loop):

    target.reply(503, 503, 200)          # the next answers, in order; then `default`
    target.reply(Reply(hang=True))       # never answer (until the server stops)
    job uri = target.url("/path")
    requests = target.wait_for(3)        # blocks until 3 requests came (sync tests)
    requests = await target.wait_for_async(3)
    requests[0].method, .path, .query, .headers (case-insensitive), .body, .received_at

All methods are thread-safe: the server runs on another thread's event loop than tests.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

__all__ = ["RecordedRequest", "Reply", "TargetServer"]


@dataclass(frozen=True)
class Reply:
    """How the target answers one request."""

    status: int = 200
    body: bytes = b"ok"
    hang: bool = False  # never answer: the request waits until the server stops


@dataclass(frozen=True)
class RecordedRequest:
    """One request the target received."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: CIMultiDictProxy[str]
    body: bytes
    received_at: float  # time.monotonic() on arrival, for ratios between requests
    answered: int | None = field(default=None)  # the status it got (None: hung)

    @property
    def bearer_token(self) -> str | None:
        """The token of an `Authorization: Bearer ...` header, if any."""
        value = self.headers.get("Authorization", "")
        return value[len("Bearer ") :] if value.startswith("Bearer ") else None


class TargetServer:
    """An aiohttp server on 127.0.0.1 that records requests and answers as told."""

    def __init__(self, default: Reply | int = 200) -> None:
        self.default = _as_reply(default)
        self._queue: list[Reply] = []
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._runner: web.AppRunner | None = None
        self._release: asyncio.Event | None = None
        self.port = 0

    def url(self, path: str = "/") -> str:
        """An http:// URL on this server."""
        return f"http://127.0.0.1:{self.port}{path}"

    def reply(self, *replies: Reply | int) -> None:
        """Queue the answers to the next requests (ints are status codes)."""
        with self._lock:
            self._queue.extend(_as_reply(reply) for reply in replies)

    @property
    def requests(self) -> list[RecordedRequest]:
        """The requests received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def wait_for(self, count: int, timeout: float = 20.0) -> list[RecordedRequest]:
        """Block until `count` requests came; AssertionError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self._requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"target got {len(self._requests)} requests, expected {count}"
                    )
                self._arrived.wait(left)
            return list(self._requests)

    async def wait_for_async(self, count: int, within: float = 20.0) -> list[RecordedRequest]:
        """`wait_for` for async tests (waits in a worker thread)."""
        return await asyncio.to_thread(self.wait_for, count, within)

    async def start(self) -> None:
        """Listen on an ephemeral port of 127.0.0.1."""
        self._release = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        address = self._runner.addresses[0]
        self.port = int(address[1])

    async def stop(self) -> None:
        """Release hanging requests and stop listening."""
        if self._release is not None:
            self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        with self._lock:
            reply = self._queue.pop(0) if self._queue else self.default
        recorded = RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers=CIMultiDictProxy(CIMultiDict(request.headers)),
            body=body,
            received_at=time.monotonic(),
            answered=None if reply.hang else reply.status,
        )
        with self._arrived:
            self._requests.append(recorded)
            self._arrived.notify_all()
        if reply.hang:
            assert self._release is not None
            await self._release.wait()
            raise web.HTTPServiceUnavailable()
        return web.Response(status=reply.status, body=reply.body)


def _as_reply(reply: Reply | int) -> Reply:
    return reply if isinstance(reply, Reply) else Reply(status=reply)
