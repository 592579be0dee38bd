"""The emulator's "Google APIs" simulator: the REST targets the operator's examples call.

Why: a ScheduledGcpCall or GcpTask ends in a call to a Google REST API - Compute
(`instanceGroupManagers.resize`, `securityPolicies.patchRule`), Cloud Build
(`triggers.run`), Dataflow (`templates:launch`). The operator's relay then follows what
the call started (a `compute#operation`, a google.longrunning Operation, a Dataflow job).
To test that end to end without Google, these APIs are simulated inside the emulator, with
Google's request and response shapes (see each API module's docstring for what was checked
against the references), resources that exist only when declared, operations that finish
on the emulator's clock, after a number of polls, with an error, or never.

How it is reached: under the emulator's HTTP port at `/googleapis/<host>/<path>`, e.g.
`http://127.0.0.1:8124/googleapis/compute.googleapis.com/compute/v1/projects/...`. The
emulator's host map routes `compute.googleapis.com`, `cloudbuild.googleapis.com` and
`dataflow.googleapis.com` there by default (`host_routes`), so Cloud Scheduler jobs and
Cloud Tasks tasks aimed at `https://compute.googleapis.com/...` land here; an outside
client (the relay following a `selfLink`) reaches it by applying the same host map
(GET /emulator/v1/hostmap). Links inside responses name the real hosts.

Authentication: when the emulator requires auth (`--require-auth`, or PUT
/emulator/v1/auth), every request needs `Authorization: Bearer <access token>` that the
emulator's identity services issued; otherwise 401 with Google's error JSON (below), or
403 when the token has none of the API's scopes. The token's email is recorded either way.

Every request lands in a bounded log (method, host, path, query, rpc, email, status; see
`RequestLog`) that the admin routes (`googleapis_admin`) serve, so tests count calls and
polls. The 401/403 bodies follow Google's documented shapes for OAuth errors ("Request is
missing required authentication credential..." with reason "required", "Request had
invalid authentication credentials..." with reason "authError", "Request had insufficient
authentication scopes." with reason "insufficientPermissions").
"""

from __future__ import annotations

import collections
import datetime
import json
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from gcpcall.emulator.core import Clock
from gcpcall.emulator.googleapis_base import (
    ApiCall,
    ApiError,
    JsonObject,
    SimulatedApi,
    SimulatorSettings,
    rpc_error,
)
from gcpcall.emulator.googleapis_cloudbuild import CLOUDBUILD_HOST, CloudBuildApi
from gcpcall.emulator.googleapis_compute import COMPUTE_HOST, ComputeApi
from gcpcall.emulator.googleapis_dataflow import DATAFLOW_HOST, DataflowApi
from gcpcall.emulator.iam import Caller
from gcpcall.emulator.rpcauth import RpcAuth

__all__ = [
    "PREFIX",
    "SIMULATED_HOSTS",
    "GoogleApis",
    "GoogleApisCore",
    "RequestLog",
    "RequestRecord",
]

PREFIX = "/googleapis"
SIMULATED_HOSTS = (COMPUTE_HOST, CLOUDBUILD_HOST, DATAFLOW_HOST)
_MAX_LOG = 10_000
_AUTH_HINT = (
    "Expected OAuth 2 access token, login cookie or other valid authentication credential. "
    "See https://developers.google.com/identity/sign-in/web/devconsole-project."
)


class GoogleApisCore(Protocol):
    """What the simulator needs from the emulator: its clock and the RPC auth switch."""

    clock: Clock
    auth: RpcAuth


@dataclass(frozen=True)
class RequestRecord:
    """One request the simulator answered."""

    id: int
    time: datetime.datetime  # the emulator's clock
    method: str
    host: str
    path: str
    query: dict[str, str]
    rpc: str | None  # Google's method name, e.g. "compute.zoneOperations.get"
    email: str | None
    status: int

    def to_json(self) -> JsonObject:
        return {
            "id": self.id,
            "time": self.time.isoformat(),
            "method": self.method,
            "host": self.host,
            "path": self.path,
            "query": dict(self.query),
            "rpc": self.rpc,
            "email": self.email,
            "status": self.status,
        }


class RequestLog:
    """The last `limit` simulator requests, oldest first. Thread-safe."""

    def __init__(self, limit: int = _MAX_LOG) -> None:
        self.limit = limit
        self.dropped = 0  # records forgotten to stay within the limit
        self._entries: collections.deque[RequestRecord] = collections.deque()
        self._lock = threading.Lock()
        self._next_id = 1

    def record(self, **fields: Any) -> RequestRecord:
        """Append one record (the fields of `RequestRecord` but `id`)."""
        with self._lock:
            entry = RequestRecord(id=self._next_id, **fields)
            self._next_id += 1
            self._entries.append(entry)
            while len(self._entries) > self.limit:
                self._entries.popleft()
                self.dropped += 1
            return entry

    def entries(
        self,
        *,
        host: str | None = None,
        method: str | None = None,
        path: str | None = None,
        path_prefix: str | None = None,
        rpc: str | None = None,
        email: str | None = None,
    ) -> list[RequestRecord]:
        """The matching records (every filter given must match)."""
        with self._lock:
            entries = list(self._entries)
        return [
            e
            for e in entries
            if (host is None or e.host == host.lower())
            and (method is None or e.method == method.upper())
            and (path is None or e.path == path)
            and (path_prefix is None or e.path.startswith(path_prefix))
            and (rpc is None or e.rpc == rpc)
            and (email is None or e.email == email)
        ]

    def clear(self) -> None:
        """Forget every record."""
        with self._lock:
            self._entries.clear()
            self.dropped = 0


class GoogleApis:
    """The simulated Google APIs, their request log and settings."""

    def __init__(self, core: GoogleApisCore) -> None:
        self._core = core
        self.settings = SimulatorSettings()
        self.compute = ComputeApi(core.clock, self.settings)
        self.cloudbuild = CloudBuildApi(core.clock)
        self.dataflow = DataflowApi(core.clock)
        self.requests = RequestLog()
        self._apis: dict[str, SimulatedApi] = {
            api.host: api for api in (self.compute, self.cloudbuild, self.dataflow)
        }

    @property
    def hosts(self) -> tuple[str, ...]:
        """The hosts simulated here."""
        return tuple(self._apis)

    def host_routes(self, base_url: str) -> dict[str, str]:
        """The host-map entries that route each simulated host to `base_url` (the
        emulator's HTTP URL): host -> `<base_url>/googleapis/<host>`."""
        base = base_url.rstrip("/")
        return {host: f"{base}{PREFIX}/{host}" for host in self._apis}

    def add_routes(self, app: web.Application) -> None:
        """Serve every simulated API under /googleapis/<host>/..."""
        app.router.add_route("*", PREFIX + "/{host}/{tail:.*}", self._serve)

    # -- declarations --------------------------------------------------------------------

    def declare(self, doc: Mapping[str, Any]) -> dict[str, int]:
        """Declare resources in bulk (see `googleapis_admin` for the document's shape);
        returns how many of each kind. ValueError on a bad document (nothing is declared
        then)."""
        plan = list(_declarations(doc))
        for kind, items in plan:  # validate everything before declaring anything
            for item in items:
                if not isinstance(item, dict):
                    raise ValueError(f"{kind}: every declaration must be a JSON object")
        scratch = GoogleApis(self._core)
        for kind, items in plan:
            for item in items:
                _DECLARE[kind](scratch, item)
        counts: dict[str, int] = {}
        for kind, items in plan:
            for item in items:
                _DECLARE[kind](self, item)
            counts[kind] = counts.get(kind, 0) + len(items)
        return counts

    def declarations(self) -> JsonObject:
        return {
            "compute": self.compute.declarations(),
            "cloudbuild": self.cloudbuild.declarations(),
            "dataflow": self.dataflow.declarations(),
        }

    def reset(self) -> None:
        """Forget every declaration, operation, build and job (not the request log)."""
        for api in self._apis.values():
            api.reset()

    # -- serving -------------------------------------------------------------------------

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        host = request.match_info["host"].lower()
        path = "/" + request.match_info["tail"]
        query = {key: value for key, value in request.query.items()}
        body = await request.read()
        email: str | None = None
        rpc: str | None = None
        try:
            api = self._apis.get(host)
            if api is None:
                raise rpc_error(404, "NOT_FOUND", f"The host {host} is not simulated.")
            handler, params, rpc = api.router.match(request.method, path)
            header = request.headers.get("Authorization")
            caller = self._core.auth.iam.authenticate(header)
            email = caller.principal if caller is not None else None
            self._authorize(caller, header, api)
            call = ApiCall(request.method, host, path, query, body, email)
            status, payload = 200, await handler(call, params)
        except ApiError as error:
            status, payload = error.status, error.body
        self.requests.record(
            time=self._core.clock.now(),
            method=request.method,
            host=host,
            path=path,
            query=query,
            rpc=rpc,
            email=email,
            status=status,
        )
        response = web.Response(
            status=status,
            text=json.dumps(payload, indent=2),
            content_type="application/json",
            charset="UTF-8",
        )
        if status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="https://accounts.google.com/"'
        return response

    def _authorize(self, caller: Caller | None, header: str | None, api: SimulatedApi) -> None:
        """Google's 401/403 when auth is required and the caller has no (suitable) token."""
        if not self._core.auth.required:
            return
        if caller is None:
            raise _unauthenticated(bool(header))
        if not api.scopes.intersection(caller.scopes):
            raise ApiError(
                403,
                {
                    "error": {
                        "code": 403,
                        "message": "Request had insufficient authentication scopes.",
                        "errors": [
                            {
                                "message": "Insufficient Permission",
                                "domain": "global",
                                "reason": "insufficientPermissions",
                            }
                        ],
                        "status": "PERMISSION_DENIED",
                    }
                },
            )


def _unauthenticated(sent: bool) -> ApiError:
    if sent:
        message = f"Request had invalid authentication credentials. {_AUTH_HINT}"
        detail = {"message": "Invalid Credentials", "reason": "authError"}
    else:
        message = f"Request is missing required authentication credential. {_AUTH_HINT}"
        detail = {"message": "Login Required.", "reason": "required"}
    return ApiError(
        401,
        {
            "error": {
                "code": 401,
                "message": message,
                "errors": [
                    {
                        "message": detail["message"],
                        "domain": "global",
                        "reason": detail["reason"],
                        "location": "Authorization",
                        "locationType": "header",
                    }
                ],
                "status": "UNAUTHENTICATED",
            }
        },
    )


_DECLARE: dict[str, Any] = {
    "compute.instance_group_managers": lambda apis, doc: (
        apis.compute.declare_instance_group_manager(doc)
    ),
    "compute.security_policies": lambda apis, doc: apis.compute.declare_security_policy(doc),
    "cloudbuild.triggers": lambda apis, doc: apis.cloudbuild.declare_trigger(doc),
    "dataflow.templates": lambda apis, doc: apis.dataflow.declare_template(doc),
}


def _declarations(doc: Mapping[str, Any]) -> Iterable[tuple[str, list[Any]]]:
    """(kind, items) of a bulk document; ValueError for unknown sections or kinds."""
    if not isinstance(doc, Mapping):
        raise ValueError("the declarations must be a JSON object")
    known = {kind.split(".")[0] for kind in _DECLARE}
    for section, kinds in doc.items():
        if section not in known or not isinstance(kinds, Mapping):
            raise ValueError(f"unknown section {section!r}: expected {sorted(known)}")
        for name, items in kinds.items():
            kind = f"{section}.{name}"
            if kind not in _DECLARE:
                raise ValueError(f"unknown kind {kind!r}: expected one of {sorted(_DECLARE)}")
            if not isinstance(items, list):
                raise ValueError(f"{kind} must be a list")
            yield kind, items
