"""The Dispatcher: outgoing HTTP attempts, the host map, deadlines on the emulator clock.

Why: every job run and task dispatch goes through it; targets like
`https://compute.googleapis.com/...` must reach a local server in tests, and an attempt
deadline must be enforceable without waiting for it in real time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gcpcall.emulator.core import Clock, Dispatcher, HttpCall
from tests.emulator.target import Reply, TargetServer


@pytest.fixture
async def local_target() -> AsyncIterator[TargetServer]:
    server = TargetServer()
    await server.start()
    yield server
    await server.stop()


def test_host_map_rewrites_scheme_host_and_keeps_path_and_query() -> None:
    dispatcher = Dispatcher({"compute.googleapis.com": "http://127.0.0.1:9000/prefix/"})

    assert (
        dispatcher.resolve("https://compute.googleapis.com/compute/v1/x?a=1&b=2")
        == "http://127.0.0.1:9000/prefix/compute/v1/x?a=1&b=2"
    )
    assert dispatcher.resolve("https://COMPUTE.googleapis.com") == "http://127.0.0.1:9000/prefix/"
    assert dispatcher.resolve("https://dataflow.googleapis.com/v1") == (
        "https://dataflow.googleapis.com/v1"
    )
    dispatcher.remove_host_route("compute.googleapis.com")
    assert dispatcher.host_map() == {}


async def test_send_reports_status_and_body(local_target: TargetServer) -> None:
    dispatcher = Dispatcher()
    local_target.reply(Reply(status=418, body=b"teapot"))
    try:
        outcome = await dispatcher.send(
            HttpCall("PATCH", local_target.url("/p"), {"X-A": "1"}, b"data", 10)
        )
    finally:
        await dispatcher.close()

    assert (outcome.status, outcome.body, outcome.error) == (418, b"teapot", None)
    (request,) = local_target.requests
    assert (request.method, request.path, request.body) == ("PATCH", "/p", b"data")
    assert request.headers["X-A"] == "1"


async def test_send_through_the_host_map_keeps_the_original_host(
    local_target: TargetServer,
) -> None:
    dispatcher = Dispatcher()
    dispatcher.set_host_route("dataflow.googleapis.com", local_target.url())
    try:
        outcome = await dispatcher.send(
            HttpCall("POST", "https://dataflow.googleapis.com/v1b3/launch?x=y", {}, b"", 10)
        )
    finally:
        await dispatcher.close()

    assert outcome.status == 200
    (request,) = local_target.requests
    assert (request.path, request.query) == ("/v1b3/launch", {"x": "y"})
    assert request.headers["Host"] == "dataflow.googleapis.com"


async def test_deadline_is_measured_on_the_emulator_clock(local_target: TargetServer) -> None:
    clock = Clock()
    dispatcher = Dispatcher(clock=clock)
    local_target.reply(Reply(hang=True))
    try:
        sending = asyncio.ensure_future(
            dispatcher.send(HttpCall("GET", local_target.url(), {}, b"", 120))
        )
        await local_target.wait_for_async(1)
        assert not sending.done()
        clock.advance(121)
        outcome = await asyncio.wait_for(sending, timeout=10)
    finally:
        await dispatcher.close()

    assert outcome.status is None
    assert outcome.deadline_exceeded


async def test_connection_failure_is_reported_not_raised() -> None:
    dispatcher = Dispatcher()
    try:
        outcome = await dispatcher.send(HttpCall("GET", "http://127.0.0.1:1/", {}, b"", 10))
    finally:
        await dispatcher.close()

    assert outcome.status is None
    assert outcome.error is not None
    assert not outcome.deadline_exceeded
