"""An outside client of the emulator's simulated Google APIs, and helpers for their tests.

Why: the relay (and any other client) reaches `https://compute.googleapis.com/...` by
applying the emulator's host map, exactly as the emulator's own dispatcher does for Cloud
Scheduler and Cloud Tasks. The tests call the simulated APIs the same way - with real
`https://<host>/...` URLs (the `selfLink`s the APIs hand out), an aiohttp session and a
host map read from the emulator's admin API - so what they prove holds for real clients.

Use (the `google` fixture in conftest.py builds one for the `emulator` fixture):

    reply = await google.call("POST", "https://compute.googleapis.com/compute/v1/...")
    reply.status, reply.json, reply.headers
    await google.declare("compute/instance-group-managers", {...})
    await google.requests(path="/compute/v1/...")   # the simulator's request log
    await google.advance(2.5)                       # the emulator's clock
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from multidict import CIMultiDictProxy

__all__ = ["AdminApi", "GoogleClient", "Reply"]


class AdminApi(Protocol):
    """The emulator's admin API (conftest's `RunningEmulator`)."""

    async def admin_async(self, method: str, path: str, body: Any = None) -> tuple[int, Any]: ...


@dataclass(frozen=True)
class Reply:
    """One answer of a simulated API."""

    status: int
    json: Any
    headers: CIMultiDictProxy[str]


class GoogleClient:
    """Calls `https://<google host>/...` URLs through the emulator's host map."""

    def __init__(self, emulator: AdminApi, session: aiohttp.ClientSession) -> None:
        self.emulator = emulator
        self.session = session

    async def host_map(self) -> dict[str, str]:
        status, doc = await self.emulator.admin_async("GET", "/hostmap")
        assert status == 200, doc
        hosts: dict[str, str] = doc["hosts"]
        return hosts

    async def resolve(self, url: str) -> str:
        """The local URL for `url`, as any host-map-applying client computes it."""
        parts = urlsplit(url)
        base = (await self.host_map()).get(parts.hostname or "")
        assert base is not None, f"{parts.hostname} is not in the emulator's host map"
        target = urlsplit(base)
        path = target.path.rstrip("/") + parts.path
        return urlunsplit((target.scheme, target.netloc, path, parts.query, ""))

    async def call(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """Send one request; the JSON answer (or None when the body is empty)."""
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        async with self.session.request(
            method, await self.resolve(url), json=json, headers=sent
        ) as response:
            body = await response.read()
            parsed = await response.json(content_type=None) if body else None
            return Reply(response.status, parsed, response.headers)

    async def declare(self, kind: str, doc: dict[str, Any]) -> dict[str, Any]:
        """PUT a declaration (e.g. kind "compute/instance-group-managers")."""
        status, body = await self.emulator.admin_async("PUT", f"/googleapis/{kind}", doc)
        assert status == 200, body
        result: dict[str, Any] = body
        return result

    async def requests(self, **filters: str) -> list[dict[str, Any]]:
        """The simulator's request log, filtered (host, method, path, path_prefix, rpc)."""
        query = "&".join(f"{key}={value}" for key, value in filters.items())
        status, body = await self.emulator.admin_async("GET", f"/googleapis/requests?{query}")
        assert status == 200, body
        assert body["count"] == len(body["requests"])
        entries: list[dict[str, Any]] = body["requests"]
        return entries

    async def advance(self, seconds: float) -> None:
        """Move the emulator's clock forward."""
        status, body = await self.emulator.admin_async(
            "POST", "/clock/advance", {"seconds": seconds}
        )
        assert status == 200, body
