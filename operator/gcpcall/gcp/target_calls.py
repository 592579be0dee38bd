"""The relay's own HTTP calls: the target in the spec, and the operations it started.

Why one adapter: these calls carry a Google-minted token to whatever the spec names, so
they get the same care everywhere: the endpoints' host map (an emulator stands in for
`*.googleapis.com`), no redirects followed (a token must not travel to a host the spec did
not name), no cookies kept (the session is shared by every object and namespace: a cookie
one target set must not ride along on another object's call), a timeout inside the
caller's deadline, and a response read only up to a bound (a hostile or broken target
cannot make the relay hold gigabytes).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from gcpcall.api.relay_runs import CallOutcome
from gcpcall.config import Endpoints

__all__ = ["MAX_BODY_BYTES", "TargetCaller"]

MAX_BODY_BYTES = 1024 * 1024  # read of a response; status keeps a few KB of it


class TargetCaller:
    """Sends one request per call on a shared session; never raises for network trouble."""

    def __init__(self, endpoints: Endpoints) -> None:
        self.endpoints = endpoints
        self._session: aiohttp.ClientSession | None = None

    def route(self, url: str) -> tuple[str, str | None]:
        """(the URL really called, the Host header to send) after the host map."""
        parts = urlsplit(url)
        base = self.endpoints.host_map.get((parts.hostname or "").lower())
        if base is None:
            return url, None
        target = urlsplit(base)
        path = target.path.rstrip("/") + (parts.path or "/")
        return urlunsplit((target.scheme, target.netloc, path, parts.query, "")), parts.netloc

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=256)
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=True, skip_auto_headers=("User-Agent",),
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=None))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def call(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None,
        within: float,
    ) -> CallOutcome:
        """One request; `within` seconds for the whole answer (the caller's deadline)."""
        real, host = self.route(url)
        sent = dict(headers)
        if host is not None:
            sent["Host"] = host
        sent.setdefault("User-Agent", "gcpcall-operator-relay")
        try:
            async with asyncio.timeout(within):
                async with self._http().request(
                    method, real, headers=sent, data=body, allow_redirects=False,
                ) as resp:
                    data = await _read_bounded(resp.content, MAX_BODY_BYTES)
                    return CallOutcome(resp.status, data)
        except TimeoutError:
            return CallOutcome(None, error=f"no answer within {within:.0f} s", timed_out=True)
        except (aiohttp.ClientError, OSError) as e:
            return CallOutcome(None, error=f"{type(e).__name__}: {e}"[:300])


async def _read_bounded(content: aiohttp.StreamReader, limit: int) -> bytes:
    """The body up to `limit` bytes. One `read(limit)` returns only what has arrived so
    far (often the first network chunk), which would cut a long body short."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await content.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
