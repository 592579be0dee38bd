"""The event recorder while the API server cannot take posts: retried, not dropped at once.

Found by the full-size R3 bench: Events of objects created while the API server was
restarting were dropped at their first failure, so `kubectl describe` of those objects
lacked their `Created` event. Runs the recorder (and our KubeClient) against a real HTTP
server on loopback that fails the first posts the way a restarting API server does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import REGISTRY

from gcpcall.kube import Connection, KubeClient, ObjectRef
from gcpcall.observe.events import EventRecorder

REF = ObjectRef("ScheduledGcpCall", "scheduledgcpcalls", "team-a", "nightly", "uid-1")


class Server:
    """Answers the first `failures` posts with `status` (plain text), then 201."""

    def __init__(self, failures: int, status: int) -> None:
        self.failures, self.status = failures, status
        self.tries = 0
        self.posted: list[dict[str, Any]] = []

    async def post(self, request: web.Request) -> web.Response:
        self.tries += 1
        if self.tries <= self.failures:
            return web.Response(status=self.status, text="The apiserver is shutting down")
        self.posted.append(await request.json())
        return web.json_response({"kind": "Event"}, status=201)


@pytest.fixture
async def serve() -> AsyncIterator[Any]:
    runners: list[web.AppRunner] = []
    clients: list[KubeClient] = []

    async def start(server: Server) -> KubeClient:
        app = web.Application()
        app.router.add_post("/api/v1/namespaces/{ns}/events", server.post)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        client = KubeClient(Connection(server=f"http://127.0.0.1:{runner.addresses[0][1]}"))
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()
    for runner in runners:
        await runner.cleanup()


def dropped() -> float:
    return REGISTRY.get_sample_value("gcpcall_events_dropped_total") or 0.0


async def test_an_event_is_posted_once_the_api_server_takes_it(serve: Any) -> None:
    server = Server(failures=3, status=429)
    recorder = EventRecorder(await serve(server), retry_delays=(0.01,) * 5)
    before = dropped()
    recorder.normal(REF, "Created", "created Cloud Scheduler job j")
    await recorder.flush(within=10)
    assert server.tries == 4
    assert [e["reason"] for e in server.posted] == ["Created"]
    assert dropped() == before


async def test_an_event_the_api_server_never_takes_is_dropped_and_counted(
        serve: Any, caplog: pytest.LogCaptureFixture) -> None:
    server = Server(failures=100, status=503)
    recorder = EventRecorder(await serve(server), retry_delays=(0.01, 0.01))
    before = dropped()
    recorder.normal(REF, "Created", "created Cloud Scheduler job j")
    await recorder.flush(within=10)
    assert server.tries == 3  # the first try and two retries
    assert dropped() == before + 1
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        "could not post event Created: 503 Service Unavailable: The apiserver is shutting down"]


async def test_an_event_the_api_server_refuses_is_not_retried(serve: Any) -> None:
    server = Server(failures=100, status=422)
    recorder = EventRecorder(await serve(server), retry_delays=(0.01,) * 5)
    recorder.normal(REF, "Created", "created Cloud Scheduler job j")
    await recorder.flush(within=10)
    assert server.tries == 1
