"""Admin HTTP routes of the Cloud Scheduler half: attempt history and "fire now".

Why: the real API only shows a job's last attempt (`last_attempt_time`, `status`), which
is all the operator uses; tests need the whole run history and a way to make a job's
next scheduled run happen now instead of waiting for its cron time.

How it is wired (the same for every service half): this module depends only on the small
`SchedulerAdminView` protocol below, never on `gcpcall.emulator.scheduler`; the service
module never imports its admin module; `gcpcall.emulator.server` hands the service to
`add_routes`. So there is no import cycle to paper over.

Routes (JSON in and out):
- GET    /emulator/v1/scheduler/attempts[?job=NAME]  -> {"attempts": [Attempt...]}
- DELETE /emulator/v1/scheduler/attempts             -> {} (forgets the history)
- POST   /emulator/v1/scheduler/fire {"job": NAME, "wait": false}
         -> {"job", "schedule_time", "attempts"}; 404 unknown job, 409 job not ENABLED.
  An Attempt is {"job", "schedule_time", "attempt_time", "retry", "forced", "code",
  "code_name", "http_status", "error"} (times are RFC 3339 on the emulator's clock).
"""

from __future__ import annotations

import datetime
from typing import Any, Protocol

from aiohttp import web

from gcpcall.emulator.scheduler_run import Attempt

__all__ = ["PREFIX", "SchedulerAdminView", "add_routes"]

PREFIX = "/emulator/v1/scheduler"


class SchedulerAdminView(Protocol):
    """What the admin routes need from the Cloud Scheduler half (`SchedulerService`)."""

    def attempts(self, job: str | None = None) -> list[Attempt]: ...

    def clear_attempts(self) -> None: ...

    async def fire(
        self, name: str, wait: bool = False
    ) -> tuple[datetime.datetime, list[Attempt]]: ...


def add_routes(app: web.Application, service: SchedulerAdminView) -> None:
    """Register the Scheduler admin routes on the emulator's HTTP app."""

    async def list_attempts(request: web.Request) -> web.Response:
        attempts = service.attempts(request.query.get("job"))
        return web.json_response({"attempts": [a.as_json() for a in attempts]})

    async def clear_attempts(request: web.Request) -> web.Response:
        service.clear_attempts()
        return web.json_response({})

    async def fire(request: web.Request) -> web.Response:
        body: dict[str, Any] = await request.json()
        name = str(body.get("job", ""))
        try:
            schedule_time, attempts = await service.fire(name, wait=bool(body.get("wait")))
        except KeyError:
            return web.json_response({"error": f"job {name} not found"}, status=404)
        except ValueError as error:
            return web.json_response({"error": str(error)}, status=409)
        return web.json_response(
            {
                "job": name,
                "schedule_time": schedule_time.isoformat(),
                "attempts": [a.as_json() for a in attempts],
            }
        )

    app.router.add_get(f"{PREFIX}/attempts", list_attempts)
    app.router.add_delete(f"{PREFIX}/attempts", clear_attempts)
    app.router.add_post(f"{PREFIX}/fire", fire)
