"""The relay's target calls against a real HTTP server on loopback: what travels, what not.

Why here: `TargetCaller` is the one place a Google-minted token leaves the relay for
whatever host a spec names; the session is shared by every object and namespace.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from gcpcall.config import Endpoints
from gcpcall.gcp.target_calls import MAX_BODY_BYTES, TargetCaller


@pytest.fixture
async def target() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    seen: list[dict[str, str]] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        seen.append(dict(request.headers))
        if request.path == "/big":
            return web.Response(body=b"x" * (MAX_BODY_BYTES + 10))
        if request.path == "/redirect":
            raise web.HTTPFound("http://127.0.0.1:9/elsewhere")
        resp = web.json_response({"ok": True})
        resp.set_cookie("session", "namespace-a-secret")
        return resp

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}", seen
    await runner.cleanup()


async def test_a_cookie_one_target_set_is_not_sent_on_the_next_call(
        target: tuple[str, list[dict[str, str]]]) -> None:
    base, seen = target
    caller = TargetCaller(Endpoints())
    try:
        first = await caller.call("POST", f"{base}/a", {"Authorization": "Bearer t-a"}, b"{}", 5)
        second = await caller.call("POST", f"{base}/b", {"Authorization": "Bearer t-b"}, b"{}",
                                   5)
    finally:
        await caller.close()
    assert (first.http_status, second.http_status) == (200, 200)
    assert [h.get("Authorization") for h in seen] == ["Bearer t-a", "Bearer t-b"]
    assert "Cookie" not in seen[1]


async def test_redirects_are_not_followed_and_bodies_are_bounded(
        target: tuple[str, list[dict[str, str]]]) -> None:
    base, seen = target
    caller = TargetCaller(Endpoints())
    try:
        moved = await caller.call("GET", f"{base}/redirect", {"Authorization": "Bearer t"},
                                  None, 5)
        big = await caller.call("GET", f"{base}/big", {}, None, 5)
    finally:
        await caller.close()
    assert moved.http_status == 302
    assert len(seen) == 2  # the redirect's target was never asked
    assert big.http_status == 200
    assert len(big.body or b"") == MAX_BODY_BYTES


async def test_the_host_map_routes_a_google_host_and_keeps_its_name() -> None:
    caller = TargetCaller(Endpoints(host_map={"compute.googleapis.com": "http://127.0.0.1:1/x"}))
    assert caller.route("https://compute.googleapis.com/compute/v1/p?a=1") == (
        "http://127.0.0.1:1/x/compute/v1/p?a=1", "compute.googleapis.com")
    assert caller.route("https://example.com/y") == ("https://example.com/y", None)
