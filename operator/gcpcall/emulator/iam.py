"""IAM for the emulator: who is calling, who may act as which service account, and the
IAM Credentials API (generateAccessToken, generateIdToken) that enforces it.

Why: the operator's promise is that team-a cannot act as team-b's Google service account.
Only an emulator that refuses as Google refuses (PERMISSION_DENIED for a principal without
Token Creator / Workload Identity User on the target, across every link of a delegation
chain) can prove it. The same policy answers the Scheduler and Tasks emulators' question
"may this caller attach this service account to a job" (iam.serviceAccounts.actAs): one
relation, "member may act as GSA", stands for the three roles involved.

Callers are identified by the bearer token (`TokenIssuer.access_token_info`, minus revoked
tokens): a Google service account's email, or the `principal://` of a federated Workload
Identity (minted by the STS emulator), which also matches the legacy
`serviceAccount:POOL[NS/KSA]` member. A service account may always act as itself here
(Google wants an explicit binding even then; docs/identity.md says so to users).

For the other emulated services: `caller_from_metadata(context.invocation_metadata())` ->
Caller or None (UNAUTHENTICATED), then `may_act_as(caller, token_service_account)` ->
else PERMISSION_DENIED with `act_as_denied_message(token_service_account)`.

Google-compatible routes:
- POST /v1/projects/-/serviceAccounts/{email}:generateAccessToken
  {"scope": [...], "lifetime": "3600s", "delegates": [...]} -> {"accessToken", "expireTime"}
- POST /v1/projects/-/serviceAccounts/{email}:generateIdToken
  {"audience", "includeEmail", "delegates"} -> {"token"}

Admin routes (JSON, prefix /emulator/v1/iam):
- GET  /policy                          -> {"enforce": bool, "grants": {member: [gsa, ...]}}
- PUT  /policy {"grants": {...}, "enforce"?} -> the policy (replaces every grant)
- POST /policy:grant  {"member", "serviceAccount"} -> the policy
- POST /policy:revoke {"member", "serviceAccount"} -> the policy
- POST /tokens:revoke {"token"}          -> {} (the access token is refused from then on)
- POST /tokens:revoke {"principal"}      -> {"revoked": n} (every token of that principal
                                          presented to an emulated service so far)
- GET  /calls                            -> {"calls": [{"method", "caller", "target", "status"}]}
"""

from __future__ import annotations

import datetime
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from aiohttp import web

from gcpcall.emulator.core import CallLog, TokenIssuer

__all__ = [
    "CLOUD_PLATFORM",
    "IAM_ADMIN_PREFIX",
    "UNAUTHENTICATED_MESSAGE",
    "Caller",
    "IamCall",
    "IamPolicy",
    "IamState",
    "act_as_denied_message",
    "add_routes",
    "google_error",
    "members_of",
]

IAM_ADMIN_PREFIX = "/emulator/v1/iam"
SERVICE = "iamcredentials.googleapis.com"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
_IAM_SCOPES = frozenset({CLOUD_PLATFORM, "https://www.googleapis.com/auth/iam"})
_MAX_LIFETIME = 3600
_MAX_SEEN = 100_000  # tokens remembered for revoke_principal before expired ones are pruned

_WORKLOAD_PRINCIPAL = re.compile(
    r"^principal://iam\.googleapis\.com/projects/[^/]+/locations/global/"
    r"workloadIdentityPools/(?P<pool>[^/]+)/subject/ns/(?P<ns>[^/]+)/sa/(?P<ksa>[^/]+)$"
)
UNAUTHENTICATED_MESSAGE = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
    "cookie or other valid authentication credential. "
    "See https://developers.google.com/identity/sign-in/web/devconsole-project."
)


def members_of(principal: str) -> frozenset[str]:
    """The IAM member strings a caller matches.

    "a@p.iam.gserviceaccount.com" -> {"serviceAccount:a@p.iam.gserviceaccount.com"};
    a GKE Workload Identity principal://.../subject/ns/NS/sa/KSA -> itself and
    "serviceAccount:POOL[NS/KSA]" (the member `roles/iam.workloadIdentityUser` is granted to).
    """
    if principal.startswith("principal://"):
        match = _WORKLOAD_PRINCIPAL.match(principal)
        if match is None:
            return frozenset({principal})
        legacy = f"serviceAccount:{match['pool']}[{match['ns']}/{match['ksa']}]"
        return frozenset({principal, legacy})
    if ":" in principal:  # already a member string ("user:...", "serviceAccount:...")
        return frozenset({principal})
    return frozenset({f"serviceAccount:{principal}"})


@dataclass(frozen=True)
class Caller:
    """Who sent a request, from its access token."""

    principal: str  # a service account email or a principal:// URI
    scopes: tuple[str, ...]

    @property
    def members(self) -> frozenset[str]:
        return members_of(self.principal)


@dataclass(frozen=True)
class IamCall:
    """One IAM Credentials request the emulator answered (never the token)."""

    method: str  # "GenerateAccessToken" | "GenerateIdToken"
    caller: str | None
    target: str
    delegates: tuple[str, ...]
    status: int


class IamPolicy:
    """Which member may act as which Google service account. Thread-safe.

    With `enforce` off every authenticated caller may act as anyone (for tests of other
    features); the default is on, as in Google.
    """

    def __init__(
        self, grants: Mapping[str, Iterable[str]] | None = None, *, enforce: bool = True
    ) -> None:
        self._lock = threading.Lock()
        self._grants: dict[str, set[str]] = {}
        self.enforce = enforce
        if grants:
            self.replace(grants)

    def grant(self, member: str, service_account: str) -> None:
        """Let `member` ("serviceAccount:x@...", a principal://, "serviceAccount:P[NS/KSA]",
        or a bare email) act as `service_account`."""
        with self._lock:
            self._grants.setdefault(_member(member), set()).add(service_account.lower())

    def revoke(self, member: str, service_account: str) -> None:
        with self._lock:
            targets = self._grants.get(_member(member))
            if targets is not None:
                targets.discard(service_account.lower())
                if not targets:
                    del self._grants[_member(member)]

    def replace(self, grants: Mapping[str, Iterable[str]]) -> None:
        with self._lock:
            self._grants = {
                _member(m): {t.lower() for t in targets} for m, targets in grants.items()
            }

    def clear(self) -> None:
        with self._lock:
            self._grants.clear()

    def grants(self) -> dict[str, list[str]]:
        with self._lock:
            return {m: sorted(t) for m, t in sorted(self._grants.items())}

    def allows(self, members: Iterable[str], service_account: str) -> bool:
        """May any of `members` act as `service_account`?"""
        if not self.enforce:
            return True
        target = service_account.lower()
        with self._lock:
            return any(target in self._grants.get(m, ()) for m in members)


def _member(text: str) -> str:
    text = text.strip()
    if text.startswith("principal://") or ":" in text:
        return text
    return f"serviceAccount:{text}"


def _email(delegate: str) -> str:
    """ "projects/-/serviceAccounts/EMAIL" (or a bare email) -> EMAIL."""
    return delegate.rsplit("/", 1)[-1].strip()


def google_error(
    status: int, code: str, message: str, details: Sequence[Mapping[str, Any]] = ()
) -> web.Response:
    """Google's JSON error shape: {"error": {"code", "message", "status", "details"?}}."""
    error: dict[str, Any] = {"code": status, "message": message, "status": code}
    if details:
        error["details"] = list(details)
    return web.json_response({"error": error}, status=status)


def act_as_denied_message(service_account: str) -> str:
    """Cloud Scheduler's / Cloud Tasks' PERMISSION_DENIED text for a missing actAs."""
    return (
        'The principal (user or service account) lacks IAM permission "iam.serviceAccounts.'
        f'actAs" for the resource "{service_account}" (or the resource may not exist).'
    )


def _denied(permission: str) -> web.Response:
    return google_error(
        403,
        "PERMISSION_DENIED",
        f"Permission '{permission}' denied on resource (or it may not exist).",
        [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "IAM_PERMISSION_DENIED",
                "domain": "iam.googleapis.com",
                "metadata": {"permission": permission},
            }
        ],
    )


class IamState:
    """The policy, token revocations and the record of IAM Credentials calls."""

    def __init__(
        self,
        tokens: TokenIssuer,
        policy: IamPolicy | None = None,
        *,
        call_log: CallLog | None = None,
    ) -> None:
        self.tokens = tokens
        self.policy = policy or IamPolicy()
        self.call_log = call_log
        self._revoked: set[str] = set()
        self._seen: dict[str, tuple[str, float]] = {}  # token -> (principal, expiry)
        self._lock = threading.Lock()
        self._calls: list[IamCall] = []

    # -- identity, for every emulated service ------------------------------------------

    def revoke_token(self, token: str) -> None:
        """Refuse this access token from now on, as Google does after a revocation."""
        with self._lock:
            self._revoked.add(token)

    def revoke_principal(self, principal: str) -> int:
        """Revoke every live token of `principal` that was presented to an emulated
        service so far (as revoking a service account's keys would); returns how many."""
        with self._lock:
            tokens = [t for t, (p, _) in self._seen.items() if p == principal]
            self._revoked.update(tokens)
            for token in tokens:
                del self._seen[token]
        return len(tokens)

    def caller(self, token: str | None) -> Caller | None:
        """Who holds `token`; None if it is unknown, expired or revoked."""
        if not token:
            return None
        with self._lock:
            if token in self._revoked:
                return None
        info = self.tokens.access_token_info(token)
        if info is None:
            return None
        with self._lock:
            if len(self._seen) >= _MAX_SEEN:
                now = datetime.datetime.now(datetime.UTC).timestamp()
                self._seen = {t: e for t, e in self._seen.items() if e[1] > now}
            self._seen[token] = (info.email, info.expires_at.timestamp())
        return Caller(principal=info.email, scopes=info.scopes)

    def authenticate(self, authorization: str | None) -> Caller | None:
        """The caller of a request from its Authorization header ("Bearer <token>")."""
        if not authorization:
            return None
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            return None
        return self.caller(token.strip())

    def caller_from_metadata(
        self, metadata: Iterable[tuple[str, str | bytes]] | None
    ) -> Caller | None:
        """The caller of a gRPC call from its invocation metadata ("authorization")."""
        for key, value in metadata or ():
            if key.lower() == "authorization":
                text = value.decode() if isinstance(value, bytes) else value
                return self.authenticate(text)
        return None

    def may_act_as(self, caller: Caller | str, service_account: str) -> bool:
        """iam.serviceAccounts.actAs / getAccessToken: may `caller` act as the GSA?

        A service account may always act as itself."""
        principal = caller.principal if isinstance(caller, Caller) else caller
        if principal.lower() == service_account.lower():
            return True
        return self.policy.allows(members_of(principal), service_account)

    def chain_allows(self, caller: Caller, delegates: Sequence[str], target: str) -> bool:
        """Caller -> delegates[0] -> ... -> target: each link needs the previous one's grant."""
        current = caller.principal
        for hop in [*(_email(d) for d in delegates), target]:
            if not self.may_act_as(current, hop):
                return False
            current = hop
        return True

    # -- the record --------------------------------------------------------------------

    def calls(self, method: str | None = None) -> list[IamCall]:
        with self._lock:
            return [c for c in self._calls if method is None or c.method == method]

    def clear_calls(self) -> None:
        with self._lock:
            self._calls.clear()

    def _record(self, call: IamCall) -> None:
        with self._lock:
            self._calls.append(call)
        if self.call_log is not None:
            code = _GRPC_CODES.get(call.status, grpc.StatusCode.UNKNOWN)
            self.call_log.record(SERVICE, call.method, code, call.caller)


_GRPC_CODES = {
    200: grpc.StatusCode.OK,
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
}


def _rfc3339(moment: datetime.datetime) -> str:
    # whole seconds with "Z": google-auth's impersonated credentials parse exactly this
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _lifetime(text: Any) -> int | None:
    if text in (None, ""):
        return _MAX_LIFETIME
    value = str(text).strip()
    if not value.endswith("s"):
        return None
    try:
        seconds = float(value[:-1])
    except ValueError:
        return None
    return int(seconds) if 0 < seconds <= _MAX_LIFETIME else None


async def _body(request: web.Request) -> dict[str, Any] | None:
    try:
        doc = await request.json() if request.can_read_body else {}
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _generate(state: IamState, method: str, permission: str) -> Any:
    async def handle(request: web.Request) -> web.Response:
        target = request.match_info["email"]
        caller = state.authenticate(request.headers.get("Authorization"))
        doc = await _body(request)
        delegates = tuple(str(d) for d in (doc or {}).get("delegates") or ())

        def done(response: web.Response) -> web.Response:
            principal = caller.principal if caller else None
            state._record(IamCall(method, principal, target, delegates, response.status))
            return response

        if caller is None:
            return done(google_error(401, "UNAUTHENTICATED", UNAUTHENTICATED_MESSAGE))
        if doc is None:
            return done(google_error(400, "INVALID_ARGUMENT", "Invalid JSON payload."))
        if not _IAM_SCOPES.intersection(caller.scopes):
            return done(
                google_error(
                    403, "PERMISSION_DENIED", "Request had insufficient authentication scopes."
                )
            )
        if not state.chain_allows(caller, delegates, target):
            return done(_denied(permission))
        if method == "GenerateAccessToken":
            scopes = [str(s) for s in doc.get("scope") or ()]
            lifetime = _lifetime(doc.get("lifetime"))
            if not scopes:
                return done(google_error(400, "INVALID_ARGUMENT", "Scope required."))
            if lifetime is None:
                return done(
                    google_error(
                        400,
                        "INVALID_ARGUMENT",
                        f'Lifetime must be between 1s and {_MAX_LIFETIME}s, e.g. "3600s".',
                    )
                )
            token = state.tokens.access_token(target, scopes, lifetime)
            info = state.tokens.access_token_info(token)
            expires = info.expires_at if info is not None else datetime.datetime.now(datetime.UTC)
            return done(web.json_response({"accessToken": token, "expireTime": _rfc3339(expires)}))
        audience = str(doc.get("audience") or "")
        if not audience:
            return done(google_error(400, "INVALID_ARGUMENT", "Audience required."))
        return done(web.json_response({"token": state.tokens.id_token(target, audience)}))

    return handle


def add_routes(app: web.Application, state: IamState) -> None:
    """Register the IAM Credentials API and the IAM admin routes on `app`."""
    base = "/v1/projects/{project}/serviceAccounts/{email:[^/:]+}"
    app.router.add_post(
        base + ":generateAccessToken",
        _generate(state, "GenerateAccessToken", "iam.serviceAccounts.getAccessToken"),
    )
    app.router.add_post(
        base + ":generateIdToken",
        _generate(state, "GenerateIdToken", "iam.serviceAccounts.getOpenIdToken"),
    )

    def policy_doc() -> web.Response:
        return web.json_response({"enforce": state.policy.enforce, "grants": state.policy.grants()})

    async def get_policy(request: web.Request) -> web.Response:
        return policy_doc()

    async def put_policy(request: web.Request) -> web.Response:
        doc = await _body(request)
        grants = (doc or {}).get("grants")
        if doc is None or not isinstance(grants, dict):
            return google_error(400, "INVALID_ARGUMENT", 'expected {"grants": {member: [gsa]}}')
        state.policy.replace({str(m): [str(t) for t in ts] for m, ts in grants.items()})
        if "enforce" in doc:
            state.policy.enforce = bool(doc["enforce"])
        return policy_doc()

    def edit(grant: bool) -> Any:
        async def handle(request: web.Request) -> web.Response:
            doc = await _body(request) or {}
            member, target = doc.get("member"), doc.get("serviceAccount")
            if not isinstance(member, str) or not isinstance(target, str):
                return google_error(
                    400, "INVALID_ARGUMENT", 'expected {"member": ..., "serviceAccount": ...}'
                )
            if grant:
                state.policy.grant(member, target)
            else:
                state.policy.revoke(member, target)
            return policy_doc()

        return handle

    async def revoke_token(request: web.Request) -> web.Response:
        doc = await _body(request) or {}
        token, principal = doc.get("token"), doc.get("principal")
        if isinstance(principal, str) and principal:
            return web.json_response({"revoked": state.revoke_principal(principal)})
        if not isinstance(token, str) or not token:
            return google_error(
                400, "INVALID_ARGUMENT", 'expected {"token": ...} or {"principal": ...}'
            )
        state.revoke_token(token)
        return web.json_response({})

    async def calls(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "calls": [
                    {
                        "method": c.method,
                        "caller": c.caller,
                        "target": c.target,
                        "delegates": list(c.delegates),
                        "status": c.status,
                    }
                    for c in state.calls(request.query.get("method"))
                ]
            }
        )

    app.router.add_get(IAM_ADMIN_PREFIX + "/policy", get_policy)
    app.router.add_put(IAM_ADMIN_PREFIX + "/policy", put_policy)
    app.router.add_post(IAM_ADMIN_PREFIX + "/policy:grant", edit(grant=True))
    app.router.add_post(IAM_ADMIN_PREFIX + "/policy:revoke", edit(grant=False))
    app.router.add_post(IAM_ADMIN_PREFIX + "/tokens:revoke", revoke_token)
    app.router.add_get(IAM_ADMIN_PREFIX + "/calls", calls)
