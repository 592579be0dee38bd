"""The emulator's HTTP face: Google's certs/tokeninfo endpoints and the core admin API.

Why: receivers verify the emulator's tokens exactly as they verify Google's, by fetching
certs from a URL, so that URL must exist; and tests and the demo steer the emulator (clock,
faults, host map, dropped dispatch responses) and read its call log over HTTP, from any
process.

Google-compatible routes:
- GET /oauth2/v3/certs (JWKS), GET /oauth2/v1/certs (kid -> PEM certificate),
  GET /.well-known/openid-configuration
- GET|POST /oauth2/v3/tokeninfo?access_token=... | ?id_token=...  (400 when unknown)

Admin routes (JSON in and out, prefix /emulator/v1):
- GET  /health                      -> {"grpc_port", "http_port"}
- GET  /clock                       -> {"now", "offset_seconds"}
- POST /clock/advance {"seconds": N} or {"to": RFC 3339} -> {"now", "offset_seconds"}
- GET  /faults                      -> {"rules": [{"method", "code", "rate", "latency_seconds"}]}
- POST /faults {"method", "code", "rate", "latency_seconds"?, "seed"?} -> {"rules": [...]}
- DELETE /faults                    -> {"rules": []}
- POST /faults/seed {"seed": N}     -> {}
- GET  /calls[?method=M&service=S]  -> {"count", "calls": [{"service", "method", "code",
                                        "principal", "time"}]}
- DELETE /calls                     -> {}
- GET  /hostmap                     -> {"hosts": {host: base_url}}
- PUT  /hostmap {"host", "base_url"} -> {"hosts": {...}}
- DELETE /hostmap/{host}            -> {"hosts": {...}}
- POST /dispatch/drop-responses {"count"?: 1, "host"?, "path_prefix"?, "code"?:
       "DEADLINE_EXCEEDED" | "UNAVAILABLE"} -> {"rule": {...}, "rules": [...], "dropped": [...]}
       (the next `count` Cloud Scheduler attempts / Cloud Tasks dispatches to that host and
       path prefix reach their target, which answers, but the attempt is reported failed
       without a response and retried per the job's or queue's retry policy)
- GET  /dispatch/drop-responses     -> {"rules": [{"id", "remaining", "host", "path_prefix",
                                        "code"}], "dropped": [{"rule", "method", "url",
                                        "status", "code", "time"}]}
- DELETE /dispatch/drop-responses   -> {"rules": [], "dropped": []}
"""

from __future__ import annotations

import datetime
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import grpc
from aiohttp import web

from gcpcall.emulator.core import Clock, FaultInjector, FaultRule
from gcpcall.emulator.grpcutil import EmulatorCore

__all__ = ["ADMIN_PREFIX", "HostedEmulator", "add_core_routes", "parse_status_code"]

ADMIN_PREFIX = "/emulator/v1"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HostedEmulator(EmulatorCore, Protocol):
    """The emulator as its HTTP routes see it."""

    grpc_port: int
    http_port: int

    @property
    def http_url(self) -> str: ...


def parse_status_code(name: str) -> grpc.StatusCode:
    """A grpc.StatusCode from its name ("UNAVAILABLE") or number ("14")."""
    text = name.strip().upper()
    for code in grpc.StatusCode:
        if text in (code.name, str(code.value[0])):
            return code
    raise ValueError(f"unknown status code {name!r}")


def _bad_request(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


def _clock_json(clock: Clock) -> dict[str, Any]:
    return {"now": clock.now().isoformat(), "offset_seconds": clock.offset}


def _rule_json(rule: FaultRule) -> dict[str, Any]:
    return {
        "method": rule.method,
        "code": rule.code.name,
        "rate": rule.rate,
        "latency_seconds": rule.latency_seconds,
    }


def _rules_json(faults: FaultInjector) -> dict[str, Any]:
    return {"rules": [_rule_json(rule) for rule in faults.rules()]}


async def _json_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    body = await request.json()
    if not isinstance(body, dict):
        raise ValueError("a JSON object is expected")
    return body


def add_core_routes(app: web.Application, emulator: HostedEmulator) -> None:
    """Register the certs, tokeninfo and core admin routes."""
    _add_identity_routes(app, emulator)
    _add_admin_routes(app, emulator)


def _add_identity_routes(app: web.Application, emulator: HostedEmulator) -> None:
    tokens = emulator.tokens

    async def jwks(request: web.Request) -> web.Response:
        return web.json_response(tokens.jwks())

    async def pem_certs(request: web.Request) -> web.Response:
        return web.json_response(tokens.pem_certs())

    async def discovery(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "issuer": tokens.issuer,
                "jwks_uri": f"{emulator.http_url}/oauth2/v3/certs",
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["id_token"],
                "subject_types_supported": ["public"],
            }
        )

    async def tokeninfo(request: web.Request) -> web.Response:
        params: dict[str, str] = dict(request.query)
        if request.method == "POST" and request.can_read_body:
            params.update({k: str(v) for k, v in (await request.post()).items()})
        access = params.get("access_token")
        if access:
            info = tokens.access_token_info(access)
            if info is None:
                return _invalid_token()
            expires_in = int(
                info.expires_at.timestamp() - datetime.datetime.now(datetime.UTC).timestamp()
            )
            subject = tokens.subject_id(info.email)
            return web.json_response(
                {
                    "azp": subject,
                    "aud": subject,
                    "sub": subject,
                    "scope": " ".join(info.scopes),
                    "exp": str(int(info.expires_at.timestamp())),
                    "expires_in": str(max(0, expires_in)),
                    "email": info.email,
                    "email_verified": "true",
                    "access_type": "online",
                }
            )
        id_token = params.get("id_token")
        if id_token:
            claims = tokens.verify_id_token(id_token)
            if claims is None:
                return _invalid_token()
            return web.json_response({k: str(v) for k, v in claims.items()})
        return _invalid_token()

    async def mint_id_token(request: web.Request) -> web.Response:
        """POST /emulator/v1/tokens/id {"email", "audience", "lifetime_seconds"?,
        "issued_seconds_ago"?, "email_verified"?} -> {"token"}: an ID token as Google would
        sign it, for tests of token verification (expired ones included)."""
        doc = await _json_body(request)
        email, audience = doc.get("email"), doc.get("audience")
        if not isinstance(email, str) or not isinstance(audience, str):
            return _bad_request("email and audience are required strings")
        token = tokens.id_token(
            email, audience, int(doc.get("lifetime_seconds", 3600)),
            issued_ago=int(doc.get("issued_seconds_ago", 0)),
            email_verified=bool(doc.get("email_verified", True)))
        return web.json_response({"token": token})

    app.router.add_post("/emulator/v1/tokens/id", _refusing_bad_input(mint_id_token))
    app.router.add_get("/oauth2/v3/certs", jwks)
    app.router.add_get("/oauth2/v1/certs", pem_certs)
    app.router.add_get("/.well-known/openid-configuration", discovery)
    app.router.add_route("GET", "/oauth2/v3/tokeninfo", tokeninfo)
    app.router.add_route("POST", "/oauth2/v3/tokeninfo", tokeninfo)


def _invalid_token() -> web.Response:
    return web.json_response(
        {"error": "invalid_token", "error_description": "Invalid Value"}, status=400
    )


def _add_admin_routes(app: web.Application, emulator: HostedEmulator) -> None:
    clock, faults, calls, dispatcher = (
        emulator.clock,
        emulator.faults,
        emulator.calls,
        emulator.dispatcher,
    )

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"grpc_port": emulator.grpc_port, "http_port": emulator.http_port})

    async def get_clock(request: web.Request) -> web.Response:
        return web.json_response(_clock_json(clock))

    async def advance_clock(request: web.Request) -> web.Response:
        body = await _json_body(request)
        if "to" in body:
            target = datetime.datetime.fromisoformat(str(body["to"]))
            if target.tzinfo is None:
                raise ValueError("'to' needs a UTC offset")
            seconds = max(0.0, (target - clock.now()).total_seconds())
        else:
            seconds = float(body.get("seconds", 0))
        clock.advance(seconds)
        return web.json_response(_clock_json(clock))

    async def get_faults(request: web.Request) -> web.Response:
        return web.json_response(_rules_json(faults))

    async def set_fault(request: web.Request) -> web.Response:
        body = await _json_body(request)
        if "seed" in body:
            faults.seed(int(body["seed"]))
        if "method" in body:
            faults.set(
                str(body["method"]),
                parse_status_code(str(body.get("code", "UNAVAILABLE"))),
                float(body.get("rate", 1.0)),
                float(body.get("latency_seconds", 0.0)),
            )
        return web.json_response(_rules_json(faults))

    async def clear_faults(request: web.Request) -> web.Response:
        faults.clear()
        return web.json_response(_rules_json(faults))

    async def seed_faults(request: web.Request) -> web.Response:
        faults.seed(int((await _json_body(request))["seed"]))
        return web.json_response({})

    async def list_calls(request: web.Request) -> web.Response:
        method = request.query.get("method")
        service = request.query.get("service")
        entries = [
            {
                "service": entry.service,
                "method": entry.method,
                "code": entry.code.name,
                "principal": entry.principal,
                "time": entry.time.isoformat(),
            }
            for entry in calls.entries()
            if (method is None or entry.method == method)
            and (service is None or entry.service == service)
        ]
        return web.json_response({"count": len(entries), "calls": entries})

    async def clear_calls(request: web.Request) -> web.Response:
        calls.clear()
        return web.json_response({})

    async def get_hosts(request: web.Request) -> web.Response:
        return web.json_response({"hosts": dispatcher.host_map()})

    async def put_host(request: web.Request) -> web.Response:
        body = await _json_body(request)
        dispatcher.set_host_route(str(body["host"]), str(body["base_url"]))
        return web.json_response({"hosts": dispatcher.host_map()})

    async def delete_host(request: web.Request) -> web.Response:
        dispatcher.remove_host_route(request.match_info["host"])
        return web.json_response({"hosts": dispatcher.host_map()})

    def drops_json() -> dict[str, Any]:
        return {
            "rules": [rule.to_json() for rule in dispatcher.drop_rules()],
            "dropped": [drop.to_json() for drop in dispatcher.dropped()],
        }

    async def get_drops(request: web.Request) -> web.Response:
        return web.json_response(drops_json())

    async def add_drop(request: web.Request) -> web.Response:
        body = await _json_body(request)
        count = body.get("count", 1)
        if not isinstance(count, int) or isinstance(count, bool):
            raise ValueError("count must be an integer")
        host, prefix = body.get("host"), body.get("path_prefix")
        if not isinstance(host, str | None) or not isinstance(prefix, str | None):
            raise ValueError("host and path_prefix must be strings")
        rule = dispatcher.drop_responses(
            count, host=host, path_prefix=prefix, code=str(body.get("code", "DEADLINE_EXCEEDED"))
        )
        return web.json_response({"rule": rule.to_json(), **drops_json()})

    async def clear_drops(request: web.Request) -> web.Response:
        dispatcher.clear_drops()
        return web.json_response(drops_json())

    routes: list[tuple[str, str, Handler]] = [
        ("GET", "/health", health),
        ("GET", "/clock", get_clock),
        ("POST", "/clock/advance", advance_clock),
        ("GET", "/faults", get_faults),
        ("POST", "/faults", set_fault),
        ("DELETE", "/faults", clear_faults),
        ("POST", "/faults/seed", seed_faults),
        ("GET", "/calls", list_calls),
        ("DELETE", "/calls", clear_calls),
        ("GET", "/hostmap", get_hosts),
        ("PUT", "/hostmap", put_host),
        ("DELETE", "/hostmap/{host}", delete_host),
        ("GET", "/dispatch/drop-responses", get_drops),
        ("POST", "/dispatch/drop-responses", add_drop),
        ("DELETE", "/dispatch/drop-responses", clear_drops),
    ]
    for method, path, handler in routes:
        app.router.add_route(method, ADMIN_PREFIX + path, _refusing_bad_input(handler))


def _refusing_bad_input(handler: Handler) -> Handler:
    """Answer 400 with the reason when a request's JSON is malformed or incomplete."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except (ValueError, KeyError, TypeError) as error:
            return _bad_request(f"{type(error).__name__}: {error}")

    return guarded
