"""Bearer-token checks on the emulated Cloud Scheduler and Cloud Tasks RPCs (opt-in).

Why: the operator's promise is that each object's job or task is created *as* that
object's Google identity, and that a team cannot attach another team's service account to
its jobs. Google proves this by authenticating every admin RPC and checking
`iam.serviceAccounts.actAs` on the job's or task's token service account; an emulator that
accepts anonymous calls cannot show it. With `required` on, every RPC needs a bearer token
the emulator minted (STS, IAM Credentials, metadata server): none or an unknown one ->
UNAUTHENTICATED, a token without a suitable scope -> PERMISSION_DENIED, and attaching a
token service account the caller may not act as (the same policy as IAM Credentials) ->
PERMISSION_DENIED with Google's message. The caller's principal is recorded in the call log
either way (when a valid token is sent). Off by default, so suites that do not care about
identity keep using anonymous credentials.

How the service halves use it: the RPC wrapper calls `authenticate()` with the call's
metadata and runs the handler inside `acting_as(caller)`; a handler that attaches a token
service account calls `require_act_as(email)`. Refusals are `AuthRefused(code, message)`.

Admin routes (JSON, prefix /emulator/v1/auth):
- GET /  -> {"required": bool}
- PUT /  {"required": bool} -> the same
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from contextvars import ContextVar

import grpc
from aiohttp import web

from gcpcall.emulator.iam import (
    CLOUD_PLATFORM,
    UNAUTHENTICATED_MESSAGE,
    Caller,
    IamState,
    act_as_denied_message,
)

__all__ = [
    "AUTH_ADMIN_PREFIX",
    "INSUFFICIENT_SCOPES_MESSAGE",
    "AuthRefused",
    "RpcAuth",
    "add_routes",
]

AUTH_ADMIN_PREFIX = "/emulator/v1/auth"
INSUFFICIENT_SCOPES_MESSAGE = "Request had insufficient authentication scopes."

Metadata = Iterable[tuple[str, str | bytes]] | None

_CALLER: ContextVar[Caller | None] = ContextVar("gcpcall_emulator_rpc_caller", default=None)


class AuthRefused(Exception):
    """The RPC is refused for its credentials; the wrapper aborts with `code`."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class RpcAuth:
    """Who is calling an RPC, and may they attach this service account."""

    def __init__(self, iam: IamState, *, required: bool = False) -> None:
        self.iam = iam
        self.required = required

    def authenticate(
        self, metadata: Metadata, scopes: Iterable[str] = (CLOUD_PLATFORM,)
    ) -> Caller | None:
        """The caller behind the call's `authorization` metadata; None when anonymous.

        With `required`: raises AuthRefused UNAUTHENTICATED when there is no valid token,
        PERMISSION_DENIED when the token has none of the `scopes` the service accepts.
        """
        caller = self.iam.caller_from_metadata(metadata)
        if not self.required:
            return caller
        if caller is None:
            raise AuthRefused(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)
        if not set(scopes).intersection(caller.scopes):
            raise AuthRefused(grpc.StatusCode.PERMISSION_DENIED, INSUFFICIENT_SCOPES_MESSAGE)
        return caller

    @staticmethod
    @contextlib.contextmanager
    def acting_as(caller: Caller | None) -> Iterator[None]:
        """Run a handler with `caller` as the current RPC's caller."""
        token = _CALLER.set(caller)
        try:
            yield
        finally:
            _CALLER.reset(token)

    @staticmethod
    def current_caller() -> Caller | None:
        """The caller of the RPC being handled (None: anonymous, or outside an RPC)."""
        return _CALLER.get()

    def require_act_as(self, service_account: str | None) -> None:
        """iam.serviceAccounts.actAs on a token service account the request attaches.

        Nothing to check when auth is off or the request attaches none; otherwise the
        current caller must be allowed by the IAM policy (a service account may act as
        itself), or AuthRefused PERMISSION_DENIED with Google's message.
        """
        if not self.required or not service_account:
            return
        caller = _CALLER.get()
        if caller is None or not self.iam.may_act_as(caller, service_account):
            raise AuthRefused(
                grpc.StatusCode.PERMISSION_DENIED, act_as_denied_message(service_account)
            )


def add_routes(app: web.Application, auth: RpcAuth) -> None:
    """Register GET/PUT /emulator/v1/auth: read or switch the check at run time."""

    def doc() -> web.Response:
        return web.json_response({"required": auth.required})

    async def get(request: web.Request) -> web.Response:
        return doc()

    async def put(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("required"), bool):
            return web.json_response({"error": 'expected {"required": true|false}'}, status=400)
        auth.required = body["required"]
        return doc()

    app.router.add_get(AUTH_ADMIN_PREFIX, get)
    app.router.add_put(AUTH_ADMIN_PREFIX, put)
