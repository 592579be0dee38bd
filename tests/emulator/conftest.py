"""Fixtures of the emulator conformance suite: the emulator, clients, a recording target.

Why this shape: the official sync clients block, so the emulator (and the recording
target) run on their own event loop in a background thread; tests, sync or async, talk to
them only through the real protocols (gRPC through the official clients, HTTP for the
admin API), exactly as the operator will.

Fixtures:
- `emulator`: a `RunningEmulator` (fresh per test, ephemeral ports on 127.0.0.1) with
  `.emulator` (the `Emulator`), `.grpc_target`, `.http_url`, `.admin(method, path, body)`
  and `.call(coro)` (run a coroutine on the emulator's loop).
- `target`: a `tests.emulator.target.TargetServer` on the emulator's loop.
- `scheduler_client` / `scheduler_async_client`: official CloudScheduler clients.
- `scheduler`: both of them in turn (parametrized), behind one async interface.
- `tasks_client` / `tasks_async_client`: official CloudTasks clients, for the Tasks half.
- `google`: a `tests.emulator.googleapis_client.GoogleClient` (aiohttp, applying the
  emulator's host map) for the simulated Google APIs.
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from typing import Any, TypeVar

import aiohttp
import grpc
import pytest
from google.cloud import scheduler_v1, tasks_v2
from google.cloud.scheduler_v1.services.cloud_scheduler.transports import (
    CloudSchedulerGrpcAsyncIOTransport,
    CloudSchedulerGrpcTransport,
)
from google.cloud.tasks_v2.services.cloud_tasks.transports import (
    CloudTasksGrpcAsyncIOTransport,
    CloudTasksGrpcTransport,
)

from gcpcall.emulator.core import TokenIssuer
from gcpcall.emulator.server import Emulator
from tests.emulator.googleapis_client import GoogleClient
from tests.emulator.target import TargetServer

T = TypeVar("T")

PARENT = "projects/test-project/locations/us-central1"


class BackgroundLoop:
    """An event loop running in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run a coroutine on the loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


class RunningEmulator:
    """A started Emulator and ways to reach it from a test."""

    def __init__(self, emulator: Emulator, background: BackgroundLoop) -> None:
        self.emulator = emulator
        self._background = background

    @property
    def grpc_target(self) -> str:
        return self.emulator.grpc_target

    @property
    def http_url(self) -> str:
        return self.emulator.http_url

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run a coroutine on the emulator's loop (e.g. to inspect its state)."""
        return self._background.call(coro, timeout)

    def admin(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """(status, JSON) of an admin API call; `path` is under /emulator/v1."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.http_url}/emulator/v1{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    async def admin_async(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """`admin` for async tests (runs in a worker thread)."""
        return await asyncio.to_thread(self.admin, method, path, body)


@pytest.fixture(scope="session")
def background_loop() -> Iterator[BackgroundLoop]:
    background = BackgroundLoop()
    yield background
    background.close()


@pytest.fixture(scope="session")
def token_issuer() -> TokenIssuer:
    """One signing key for the session: RSA key generation is the slow part of startup."""
    return TokenIssuer()


@pytest.fixture
def emulator(
    background_loop: BackgroundLoop, token_issuer: TokenIssuer
) -> Iterator[RunningEmulator]:
    async def build() -> Emulator:
        instance = Emulator(seed=0, tokens=token_issuer)
        await instance.start(grpc_port=0, http_port=0)
        return instance

    instance = background_loop.call(build())
    yield RunningEmulator(instance, background_loop)
    background_loop.call(instance.stop())


@pytest.fixture
def target(background_loop: BackgroundLoop) -> Iterator[TargetServer]:
    server = TargetServer()
    background_loop.call(server.start())
    yield server
    background_loop.call(server.stop())


@pytest.fixture
def scheduler_client(emulator: RunningEmulator) -> Iterator[scheduler_v1.CloudSchedulerClient]:
    channel = grpc.insecure_channel(emulator.grpc_target)
    # The transport carries the channel (and so the credentials: none, plaintext).
    client = scheduler_v1.CloudSchedulerClient(
        transport=CloudSchedulerGrpcTransport(channel=channel)
    )
    yield client
    channel.close()


@pytest.fixture
async def scheduler_async_client(
    emulator: RunningEmulator,
) -> AsyncIterator[scheduler_v1.CloudSchedulerAsyncClient]:
    channel = grpc.aio.insecure_channel(emulator.grpc_target)
    client = scheduler_v1.CloudSchedulerAsyncClient(
        transport=CloudSchedulerGrpcAsyncIOTransport(channel=channel)
    )
    yield client
    await channel.close()


@pytest.fixture
def tasks_client(emulator: RunningEmulator) -> Iterator[tasks_v2.CloudTasksClient]:
    channel = grpc.insecure_channel(emulator.grpc_target)
    client = tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=channel))
    yield client
    channel.close()


@pytest.fixture
async def tasks_async_client(
    emulator: RunningEmulator,
) -> AsyncIterator[tasks_v2.CloudTasksAsyncClient]:
    channel = grpc.aio.insecure_channel(emulator.grpc_target)
    client = tasks_v2.CloudTasksAsyncClient(
        transport=CloudTasksGrpcAsyncIOTransport(channel=channel)
    )
    yield client
    await channel.close()


class SchedulerApi:
    """The sync or the async official client behind one awaitable interface.

    `await api.get_job(name=...)` calls the async client directly, or the sync client in
    a worker thread; `await api.list_pages(parent=..., page_size=...)` returns the raw
    ListJobsResponse pages either way.
    """

    def __init__(self, client: Any, is_async: bool) -> None:
        self.client = client
        self.is_async = is_async

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        method = getattr(self.client, name)
        if self.is_async:
            return method  # type: ignore[no-any-return]

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await asyncio.to_thread(method, *args, **kwargs)

        return call

    async def list_pages(self, **request: Any) -> list[scheduler_v1.ListJobsResponse]:
        if self.is_async:
            pager = await self.client.list_jobs(request=request)
            return [page async for page in pager.pages]
        pager = await asyncio.to_thread(self.client.list_jobs, request=request)
        return await asyncio.to_thread(lambda: list(pager.pages))


@pytest.fixture(params=["sync", "async"])
def scheduler(request: pytest.FixtureRequest, emulator: RunningEmulator) -> SchedulerApi:
    if request.param == "sync":
        return SchedulerApi(request.getfixturevalue("scheduler_client"), is_async=False)
    return SchedulerApi(request.getfixturevalue("scheduler_async_client"), is_async=True)


@pytest.fixture
async def google(emulator: RunningEmulator) -> AsyncIterator[GoogleClient]:
    async with aiohttp.ClientSession() as session:
        yield GoogleClient(emulator, session)
