"""Admin HTTP routes of the Cloud Tasks half: attempt history, "make due", settings.

Why: Cloud Tasks forgets a task once it succeeds or runs out of attempts, and keeps only
the first and last attempt while it lives - but tests must check every attempt (retry
timing, status codes) and must not wait out real backoffs or tombstone windows. These
routes, under the emulator's admin prefix `/emulator/v1/`, expose what the emulator
remembers and the knobs a test needs; nothing in Cloud Tasks' own API changes.

How it is wired (the same for every service half): this module depends only on the small
`TasksAdminView` protocol below, never on `gcpcall.emulator.tasks`; the service module
never imports its admin module; `gcpcall.emulator.server` hands the service to
`add_routes`. So there is no import cycle to paper over.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from aiohttp import web

from gcpcall.emulator.tasks_engine import TasksSettings
from gcpcall.emulator.tasks_state import TaskHistory

__all__ = ["PREFIX", "TasksAdminView", "add_routes"]

PREFIX = "/emulator/v1/tasks"


class TasksAdminView(Protocol):
    """What the admin routes need from the Cloud Tasks half (`TasksService`)."""

    @property
    def settings(self) -> TasksSettings: ...

    def history(self, name: str) -> TaskHistory | None: ...

    def histories(self, queue_name: str | None = None) -> list[TaskHistory]: ...

    def make_due(self, queue_name: str | None = None, task_name: str | None = None) -> int: ...


def add_routes(app: web.Application, service: TasksAdminView) -> None:
    """Add the Tasks half's admin routes to the emulator's HTTP app.

    GET  /emulator/v1/tasks/attempts?task=NAME -> one task's history (404 if never seen)
    GET  /emulator/v1/tasks/attempts[?queue=NAME] -> {"tasks": [history, ...]}
    POST /emulator/v1/tasks/due {"queue": NAME} or {"task": NAME} -> {"count": N}
         (live tasks become due now; the queue's state and rate limits still apply)
    GET  /emulator/v1/tasks/settings -> {"task_tombstone_seconds": s, "queue_tombstone_seconds": s}
    POST /emulator/v1/tasks/settings with either key -> the new settings
    """

    async def attempts(request: web.Request) -> web.Response:
        task = request.query.get("task")
        if task is not None:
            history = service.history(task)
            if history is None:
                return _json({"error": f"no task {task} was ever created"}, status=404)
            return _json(history.to_json())
        queue = request.query.get("queue")
        return _json({"tasks": [h.to_json() for h in service.histories(queue)]})

    async def due(request: web.Request) -> web.Response:
        body = await _body(request)
        queue, task = body.get("queue"), body.get("task")
        if not isinstance(queue, str | None) or not isinstance(task, str | None):
            return _json({"error": '"queue" and "task" must be names'}, status=400)
        if queue is None and task is None:
            return _json({"error": 'name a "queue" or a "task"'}, status=400)
        return _json({"count": service.make_due(queue_name=queue, task_name=task)})

    async def get_settings(request: web.Request) -> web.Response:
        return _json(_settings(service))

    async def set_settings(request: web.Request) -> web.Response:
        body = await _body(request)
        updates: dict[str, float] = {}
        for key, attribute in _SETTINGS.items():
            if key in body:
                value = body[key]
                if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                    return _json({"error": f"{key} must be a non-negative number"}, status=400)
                updates[attribute] = float(value)
        for attribute, value in updates.items():
            setattr(service.settings, attribute, value)
        return _json(_settings(service))

    app.router.add_get(f"{PREFIX}/attempts", attempts)
    app.router.add_post(f"{PREFIX}/due", due)
    app.router.add_get(f"{PREFIX}/settings", get_settings)
    app.router.add_post(f"{PREFIX}/settings", set_settings)


_SETTINGS = {
    "task_tombstone_seconds": "task_tombstone_seconds",
    "queue_tombstone_seconds": "queue_tombstone_seconds",
}


def _settings(service: TasksAdminView) -> dict[str, float]:
    return {key: float(getattr(service.settings, attr)) for key, attr in _SETTINGS.items()}


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise web.HTTPBadRequest(text="the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="the body must be a JSON object")
    return body


def _json(value: Any, status: int = 200) -> web.Response:
    return web.json_response(value, status=status)
