"""Admin HTTP routes of the Google APIs simulator: declarations, the request log, settings.

Why: a simulated Google resource exists only once a test (or the demo) declares it, with
how its operations end; and tests must see what reached the "Google API" - how often a
target was called, by whom, how many times an operation was polled - which no Google API
itself tells. Like the other admin modules, this one depends on the service
(`googleapis.GoogleApis`), never the other way round; `server` wires it.

Routes (JSON in and out, prefix /emulator/v1/googleapis; 400 {"error"} on bad input):
- PUT    /compute/instance-group-managers {"project", "zone" | "region", "name",
         "target_size"?: 0, behaviour..., "fail_code"?: "QUOTA_EXCEEDED",
         "fail_http_status"?: 403} -> the declaration (with "self_link")
- DELETE /compute/instance-group-managers {"project", "zone" | "region", "name"} -> {"deleted"}
- PUT    /compute/security-policies {"project", "name", "rules"?: [SecurityPolicyRule with
         "priority"], behaviour..., "fail_code"?, "fail_http_status"?} -> the declaration
- DELETE /compute/security-policies {"project", "name"} -> {"deleted": bool}
- GET    /compute/operations -> {"operations": [compute#operation + "polls"]}
- PUT    /cloudbuild/triggers {"project", "location"?: "global", "trigger", behaviour...,
         "substitutions"?} -> the declaration (with the trigger's "id")
- DELETE /cloudbuild/triggers {"project", "location"?, "trigger"} -> {"deleted": bool}
- GET    /cloudbuild/operations -> {"operations": [google.longrunning.Operation + "polls"]}
- PUT    /dataflow/templates {"gcs_path": "gs://...", "kind"?: "any" | "classic" | "flex",
         "job_type"?: "JOB_TYPE_BATCH", behaviour...} -> the declaration
- DELETE /dataflow/templates {"gcs_path"} -> {"deleted": bool}
- GET    /dataflow/jobs -> {"jobs": [Job + "template", "parameters", "launched_by", "polls"]}
- GET    /declarations -> {"compute": {"instance_group_managers": [...],
         "security_policies": [...]}, "cloudbuild": {"triggers": [...]},
         "dataflow": {"templates": [...]}}
- POST   /declarations <the same shape, any subset> -> {"declared": {"compute.
         instance_group_managers": n, ...}} (all or nothing: a bad entry declares none)
- DELETE /declarations -> {} (forgets declarations, operations, builds and jobs)
- GET    /requests[?host=&method=&path=&path_prefix=&rpc=&email=] -> {"count", "dropped",
         "requests": [{"id", "time", "method", "host", "path", "query", "rpc", "email",
         "status"}]}
- DELETE /requests -> {}
- GET    /settings -> {"max_wait_seconds": 2.0}; POST /settings {"max_wait_seconds": s}

"behaviour..." are the keys of `googleapis_base.Behavior`: "done_after_seconds" (default 2,
on the emulator's clock), "done_after_polls", "fail" (the error message the operation ends
with), "fail_after_polls", "never_done".
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from gcpcall.emulator.googleapis import GoogleApis

__all__ = ["PREFIX", "add_routes"]

PREFIX = "/emulator/v1/googleapis"

Handler = Callable[[web.Request], Awaitable[web.Response]]


def add_routes(app: web.Application, apis: GoogleApis) -> None:
    """Register the simulator's admin routes on the emulator's HTTP app."""
    compute, cloudbuild, dataflow = apis.compute, apis.cloudbuild, apis.dataflow

    def declaring(declare: Callable[[dict[str, Any]], Any]) -> Handler:
        async def put(request: web.Request) -> web.Response:
            declared = declare(await _body(request))
            return web.json_response(declared.admin_json())

        return put

    def forgetting(forget: Callable[[dict[str, Any]], bool]) -> Handler:
        async def delete(request: web.Request) -> web.Response:
            body = await _body(request) if request.can_read_body else dict(request.query)
            return web.json_response({"deleted": forget(body)})

        return delete

    async def compute_operations(request: web.Request) -> web.Response:
        return web.json_response({"operations": compute.operations_json()})

    async def cloudbuild_operations(request: web.Request) -> web.Response:
        return web.json_response({"operations": cloudbuild.operations_json()})

    async def dataflow_jobs(request: web.Request) -> web.Response:
        return web.json_response({"jobs": dataflow.jobs_json()})

    async def get_declarations(request: web.Request) -> web.Response:
        return web.json_response(apis.declarations())

    async def post_declarations(request: web.Request) -> web.Response:
        return web.json_response({"declared": apis.declare(await _body(request))})

    async def delete_declarations(request: web.Request) -> web.Response:
        apis.reset()
        return web.json_response({})

    async def list_requests(request: web.Request) -> web.Response:
        filters = {
            key: request.query[key]
            for key in ("host", "method", "path", "path_prefix", "rpc", "email")
            if key in request.query
        }
        entries = apis.requests.entries(**filters)
        return web.json_response(
            {
                "count": len(entries),
                "dropped": apis.requests.dropped,
                "requests": [entry.to_json() for entry in entries],
            }
        )

    async def clear_requests(request: web.Request) -> web.Response:
        apis.requests.clear()
        return web.json_response({})

    async def get_settings(request: web.Request) -> web.Response:
        return web.json_response({"max_wait_seconds": apis.settings.max_wait_seconds})

    async def set_settings(request: web.Request) -> web.Response:
        body = await _body(request)
        if "max_wait_seconds" in body:
            value = body["max_wait_seconds"]
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise ValueError("max_wait_seconds must be a non-negative number")
            apis.settings.max_wait_seconds = float(value)
        return await get_settings(request)

    routes: list[tuple[str, str, Handler]] = [
        (
            "PUT",
            "/compute/instance-group-managers",
            declaring(compute.declare_instance_group_manager),
        ),
        (
            "DELETE",
            "/compute/instance-group-managers",
            forgetting(compute.forget_instance_group_manager),
        ),
        ("PUT", "/compute/security-policies", declaring(compute.declare_security_policy)),
        ("DELETE", "/compute/security-policies", forgetting(compute.forget_security_policy)),
        ("GET", "/compute/operations", compute_operations),
        ("PUT", "/cloudbuild/triggers", declaring(cloudbuild.declare_trigger)),
        ("DELETE", "/cloudbuild/triggers", forgetting(cloudbuild.forget_trigger)),
        ("GET", "/cloudbuild/operations", cloudbuild_operations),
        ("PUT", "/dataflow/templates", declaring(dataflow.declare_template)),
        ("DELETE", "/dataflow/templates", forgetting(dataflow.forget_template)),
        ("GET", "/dataflow/jobs", dataflow_jobs),
        ("GET", "/declarations", get_declarations),
        ("POST", "/declarations", post_declarations),
        ("DELETE", "/declarations", delete_declarations),
        ("GET", "/requests", list_requests),
        ("DELETE", "/requests", clear_requests),
        ("GET", "/settings", get_settings),
        ("POST", "/settings", set_settings),
    ]
    for method, path, handler in routes:
        app.router.add_route(method, PREFIX + path, _refusing_bad_input(handler))


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"the body must be a JSON object: {error}") from error
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    return body


def _refusing_bad_input(handler: Handler) -> Handler:
    async def guarded(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except (ValueError, KeyError, TypeError) as error:
            return web.json_response({"error": f"{type(error).__name__}: {error}"}, status=400)

    return guarded
