"""Fixtures of the Cloud Tasks crosscheck: an emulator named by address, a recording target.

Why: our Cloud Tasks emulator is written by us and can share our misunderstandings, so the
same cases run by hand against an independent implementation (aertje/cloud-tasks-emulator)
and against ours; where they disagree, the Cloud Tasks API reference decides (see
README.md). The emulator under test is an external process reached only through
`CLOUD_TASKS_EMULATOR_ADDR` (host:port); without it nothing here is collected, so the
default test run never depends on a program the project does not install.

`CLOUD_TASKS_EMULATOR_KIND=aertje` turns on the documented skips (what the Go emulator does
not implement) and strict xfails (where it disagrees with the reference).
"""

from __future__ import annotations

import contextlib
import http.server
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.api_core import exceptions
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports import (
    CloudTasksGrpcAsyncIOTransport,
    CloudTasksGrpcTransport,
)

ADDRESS = os.environ.get("CLOUD_TASKS_EMULATOR_ADDR", "")
KIND = os.environ.get("CLOUD_TASKS_EMULATOR_KIND", "")
TARGET_HOST = os.environ.get("CLOUD_TASKS_TARGET_HOST", "127.0.0.1")
PARENT = "projects/crosscheck/locations/us-central1"

# Nothing to check without an emulator to check: collect no test at all.
collect_ignore_glob = [] if ADDRESS else ["test_*.py"]


def go_lacks(reason: str) -> pytest.MarkDecorator:
    """Skip against the Go emulator: it does not implement this (reason says what)."""
    return pytest.mark.skipif(KIND == "aertje", reason=f"aertje emulator: {reason}")


def go_disagrees(reason: str) -> pytest.MarkDecorator:
    """The Go emulator answers otherwise than the API reference: a strict xfail there."""
    return pytest.mark.xfail(KIND == "aertje", reason=f"aertje emulator: {reason}", strict=True)


@dataclass
class Received:
    """One request the target got."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.time() on arrival


@dataclass
class RecordingTarget:
    """A threaded HTTP server on 127.0.0.1: records requests, answers by a per-path plan."""

    plans: dict[str, list[int]] = field(default_factory=dict)
    defaults: dict[str, int] = field(default_factory=dict)
    requests: list[Received] = field(default_factory=list)
    port: int = 0
    lock: threading.Condition = field(default_factory=threading.Condition)

    def url(self, path: str) -> str:
        return f"http://{TARGET_HOST}:{self.port}{path}"

    def plan(self, path: str, *statuses: int, then: int = 200) -> None:
        """Answer `path` with these statuses in order, then `then` (-N: sleep N s, no answer)."""
        with self.lock:
            self.plans[path] = list(statuses)
            self.defaults[path] = then

    def answer(self, path: str) -> int:
        with self.lock:
            planned = self.plans.get(path)
            if planned:
                return planned.pop(0)
            return self.defaults.get(path, 200)

    def record(self, received: Received) -> None:
        with self.lock:
            self.requests.append(received)
            self.lock.notify_all()

    def received(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.path == path]

    def wait(self, path: str, count: int, timeout: float = 30.0) -> list[Received]:
        """Block until `path` got `count` requests; AssertionError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while len([r for r in self.requests if r.path == path]) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{path}: fewer than {count} requests arrived")
                self.lock.wait(left)
            return [r for r in self.requests if r.path == path]


def _handler(target: RecordingTarget) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            path = self.path.split("?", 1)[0]
            target.record(
                Received(self.command, path, dict(self.headers.items()), body, time.time())
            )
            status = target.answer(path)
            if status < 0:  # a target that does not answer in time
                time.sleep(-status)
                status = 503
            # The emulator may have given up on a slow answer and closed the connection.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture(scope="session")
def target() -> Iterator[RecordingTarget]:
    recorder = RecordingTarget()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(recorder))
    server.daemon_threads = True
    recorder.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield recorder
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def client() -> Iterator[tasks_v2.CloudTasksClient]:
    channel = grpc.insecure_channel(ADDRESS)
    yield tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=channel))
    channel.close()


@pytest.fixture
async def async_client() -> AsyncIterator[tasks_v2.CloudTasksAsyncClient]:
    channel = grpc.aio.insecure_channel(ADDRESS)
    yield tasks_v2.CloudTasksAsyncClient(transport=CloudTasksGrpcAsyncIOTransport(channel=channel))
    await channel.close()


def new_id(prefix: str = "x") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def make_queue(client: tasks_v2.CloudTasksClient) -> Iterator[Callable[..., str]]:
    """Create a queue with a fresh name (deleted after the test)."""
    made: list[str] = []

    def make(**fields: Any) -> str:
        name = f"{PARENT}/queues/{new_id('q')}"
        client.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=name, **fields))
        made.append(name)
        return name

    yield make
    for name in made:
        # Cleanup is best effort (the queue may be gone already); the test's result stands.
        with contextlib.suppress(exceptions.GoogleAPICallError, exceptions.RetryError):
            client.delete_queue(name=name, retry=None, timeout=5)
