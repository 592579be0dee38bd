"""The relay's HTTP server: one POST route at the path of the relay URL, and a health check.

Why aiohttp with tight limits: every byte a caller sends is hostile until the token is
checked. Bodies are capped well above an envelope (a few hundred bytes) and far below
anything that costs memory; only POST with a JSON body reaches the relay's decision, and
answers never echo what the caller sent (no request headers, no target body).
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from aiohttp import web

from gcpcall.relay.service import Relay, RelayRequest

__all__ = ["RelayServer"]

log = logging.getLogger(__name__)

_MAX_BODY = 16 * 1024


class RelayServer:
    def __init__(self, relay: Relay, address: str, port: int) -> None:
        self.relay = relay
        self.address = address
        self.port = port
        self.path = urlsplit(relay.audience).path or "/"
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=_MAX_BODY)
        app.router.add_post(self.path, self._handle)
        app.router.add_get("/healthz", self._health)
        return app

    async def _health(self, _: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def _handle(self, request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > _MAX_BODY:
            return web.json_response({"error": "body too large"}, status=413)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return web.json_response({"error": "body too large"}, status=413)
        headers = {k.lower(): v for k, v in request.headers.items()}
        answer = await self.relay.handle(RelayRequest(headers, body))
        return web.json_response(answer.body, status=answer.status)

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.address, self.port)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        log.info("relay listening on %s:%d%s for %s", self.address, self.port, self.path,
                 self.relay.audience)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
