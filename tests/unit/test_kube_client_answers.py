"""What the API server answers that is not a JSON object: never a JSONDecodeError.

A starting API server (or a proxy before it) answers some requests in plain text; seen in
the R3 bench when the API server was restarted during a create storm: the status write
raised `JSONDecodeError`, which the classifier took as unexpected and kopf retried after
60 s, with a traceback. The client is our own adapter over aiohttp; this runs it against a
real HTTP server on loopback.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from gcpcall.gcp.errors import classify
from gcpcall.kube import Connection, KubeClient, KubeError


@pytest.fixture
async def client() -> AsyncIterator[KubeClient]:
    async def text_error(_: web.Request) -> web.Response:
        return web.Response(status=503, text="Service Unavailable: starting")

    async def text_ok(_: web.Request) -> web.Response:
        return web.Response(status=200, text="ok")

    async def json_error(_: web.Request) -> web.Response:
        return web.json_response({"kind": "Status", "reason": "NotFound",
                                  "message": "gone"}, status=404)

    app = web.Application()
    app.router.add_get("/text-error", text_error)
    app.router.add_get("/text-ok", text_ok)
    app.router.add_get("/json-error", json_error)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    kube = KubeClient(Connection(server=f"http://127.0.0.1:{port}"))
    try:
        yield kube
    finally:
        await kube.close()
        await runner.cleanup()


async def test_a_plain_text_error_is_a_transient_kube_error(client: KubeClient) -> None:
    with pytest.raises(KubeError) as caught:
        await client.request("GET", "/text-error")
    assert caught.value.status == 503
    assert "starting" in caught.value.message
    assert classify(caught.value).retryable
    assert classify(caught.value).backoff == "fast"


async def test_a_success_that_is_not_json_is_transient_too(client: KubeClient) -> None:
    with pytest.raises(KubeError) as caught:
        await client.request("GET", "/text-ok")
    assert (caught.value.status, caught.value.reason) == (502, "InvalidResponse")
    assert "not JSON" in caught.value.message
    assert classify(caught.value).backoff == "fast"


async def test_a_kubernetes_status_keeps_its_reason(client: KubeClient) -> None:
    with pytest.raises(KubeError) as caught:
        await client.request("GET", "/json-error")
    assert (caught.value.status, caught.value.reason, caught.value.message) == (
        404, "NotFound", "gone")
