"""Fixtures and helpers of the Cloud Tasks conformance tests (on top of conftest.py).

Why: every Tasks test needs a queue, an HTTP task aimed at the recording target, the
emulator's attempt history and a way to wait for a task to finish; and the RPC tests run
once with the sync and once with the async official client. These live here, beside the
shared fixtures, so the Tasks test modules read as lists of behaviours.

Test modules import what they use from this module; each declares its own `tasks`
fixture as `return tasks_api(request)` (a fixture imported by name would trip ruff's F811).
"""

from __future__ import annotations

import asyncio
import datetime
import time
import uuid
from typing import Any

import pytest
from google.cloud import tasks_v2

from tests.emulator.conftest import PARENT, RunningEmulator

__all__ = [
    "CLIENT_KINDS",
    "PARENT",
    "TasksApi",
    "attempts",
    "clock_now",
    "http_task",
    "new_queue_id",
    "queue_name",
    "tasks_api",
    "wait_outcome",
    "wait_outcome_async",
]


class TasksApi:
    """The sync or the async official CloudTasks client behind one awaitable interface.

    `await api.get_task(name=...)` calls the async client directly, or the sync client in
    a worker thread; `list_queue_pages` / `list_task_pages` return the raw response pages.
    """

    def __init__(self, client: Any, is_async: bool) -> None:
        self.client = client
        self.is_async = is_async

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.client, name)
        if self.is_async:
            return method

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await asyncio.to_thread(method, *args, **kwargs)

        return call

    async def list_queue_pages(self, **request: Any) -> list[tasks_v2.ListQueuesResponse]:
        return await self._pages("list_queues", request)

    async def list_task_pages(self, **request: Any) -> list[tasks_v2.ListTasksResponse]:
        return await self._pages("list_tasks", request)

    async def _pages(self, method: str, request: dict[str, Any]) -> list[Any]:
        if self.is_async:
            pager = await getattr(self.client, method)(request=request)
            return [page async for page in pager.pages]
        pager = await asyncio.to_thread(getattr(self.client, method), request=request)
        return await asyncio.to_thread(lambda: list(pager.pages))


CLIENT_KINDS = ["sync", "async"]


def tasks_api(request: pytest.FixtureRequest) -> TasksApi:
    """The official client for a fixture parametrized over CLIENT_KINDS."""
    if request.param == "sync":
        return TasksApi(request.getfixturevalue("tasks_client"), is_async=False)
    return TasksApi(request.getfixturevalue("tasks_async_client"), is_async=True)


def new_queue_id(prefix: str = "q") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def queue_name(queue_id: str) -> str:
    return f"{PARENT}/queues/{queue_id}"


def http_task(url: str, name: str = "", **fields: Any) -> tasks_v2.Task:
    """An HTTP task aimed at `url`; `fields` set other Task fields."""
    http_fields = {k: fields.pop(k) for k in list(fields) if k in _HTTP_FIELDS}
    return tasks_v2.Task(
        name=name, http_request=tasks_v2.HttpRequest(url=url, **http_fields), **fields
    )


_HTTP_FIELDS = frozenset({"http_method", "headers", "body", "oauth_token", "oidc_token"})


def clock_now(emulator: RunningEmulator) -> datetime.datetime:
    """The emulator's clock."""
    _, clock = emulator.admin("GET", "/clock")
    return datetime.datetime.fromisoformat(clock["now"])


def attempts(emulator: RunningEmulator, task: str) -> dict[str, Any]:
    """The admin API's history of a task (every attempt, also after the task is gone)."""
    status, history = emulator.admin("GET", f"/tasks/attempts?task={task}")
    assert status == 200, history
    assert isinstance(history, dict)
    return history


def wait_outcome(
    emulator: RunningEmulator, task: str, attempts_at_least: int = 0, timeout: float = 20.0
) -> dict[str, Any]:
    """Poll the history until the task is finished (or has made that many attempts)."""
    deadline = time.monotonic() + timeout
    while True:
        history = attempts(emulator, task)
        finished = all(a["response_time"] is not None for a in history["attempts"])
        if attempts_at_least and len(history["attempts"]) >= attempts_at_least and finished:
            return history
        if not attempts_at_least and history["outcome"] != "pending":
            return history
        if time.monotonic() > deadline:
            raise AssertionError(f"task {task} did not get there: {history}")
        time.sleep(0.02)


async def wait_outcome_async(
    emulator: RunningEmulator, task: str, attempts_at_least: int = 0, within: float = 20.0
) -> dict[str, Any]:
    """`wait_outcome` for async tests."""
    return await asyncio.to_thread(wait_outcome, emulator, task, attempts_at_least, within)
