"""A GCE/GKE metadata server for the emulator: the operator's own Application Default
Credentials in tests.

Why: the Impersonation and Operator modes start from the credentials of the machine the
operator runs on, which on GKE/GCE come from the metadata server (`GCE_METADATA_HOST`).
Serving the same paths, with the same `Metadata-Flavor: Google` request check, lets the
operator and google-auth's compute_engine credentials resolve unchanged in tests. Tokens are
minted by the shared TokenIssuer, so the other emulated services know the caller.

Routes (all GET, all need the header `Metadata-Flavor: Google`, all answer with it):
- /                                   (google-auth's "am I on GCE" ping; only if free)
- /computeMetadata/v1/project/project-id, /computeMetadata/v1/project/numeric-project-id
- /computeMetadata/v1/instance/service-accounts/        -> "default/\\n<email>/\\n"
- /computeMetadata/v1/instance/service-accounts/{acct}/?recursive=true -> {email, aliases,
  scopes}
- .../{acct}/email, .../{acct}/scopes
- .../{acct}/token[?scopes=a,b]       -> {"access_token", "expires_in", "token_type"}
- .../{acct}/identity?audience=A      -> an ID token
`{acct}` is "default" or the account's email.

Admin routes (JSON, prefix /emulator/v1/metadata):
- GET /  -> {"email", "projectId", "numericProjectId", "scopes", "tokenRequests"}
- PUT /  {"email"?, "projectId"?, "numericProjectId"?, "scopes"?} -> the same
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
from aiohttp import web

from gcpcall.emulator.core import CallLog, TokenIssuer

__all__ = ["METADATA_ADMIN_PREFIX", "MetadataState", "add_routes"]

METADATA_ADMIN_PREFIX = "/emulator/v1/metadata"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
_FLAVOR = {"Metadata-Flavor": "Google"}
_ROOT = "/computeMetadata/v1"

Handler = Callable[[web.Request], Awaitable[web.Response]]


class MetadataState:
    """The instance's service account and project, and how many tokens were handed out."""

    def __init__(
        self,
        tokens: TokenIssuer,
        *,
        email: str = "operator@emulator-project.iam.gserviceaccount.com",
        project_id: str = "emulator-project",
        numeric_project_id: str = "123456789012",
        scopes: Sequence[str] = (CLOUD_PLATFORM,),
        token_lifetime: int = 3600,
        call_log: CallLog | None = None,
    ) -> None:
        self.tokens = tokens
        self.email = email
        self.project_id = project_id
        self.numeric_project_id = numeric_project_id
        self.scopes = tuple(scopes)
        self.token_lifetime = token_lifetime
        self.call_log = call_log
        self._lock = threading.Lock()
        self._issued: list[str] = []

    @property
    def token_requests(self) -> int:
        """How many access tokens the metadata server has handed out."""
        with self._lock:
            return len(self._issued)

    def issued_tokens(self) -> list[str]:
        """Every access token handed out, oldest first (for tests that revoke them)."""
        with self._lock:
            return list(self._issued)

    def mint(self, scopes: Sequence[str] | None = None) -> str:
        """A token for the instance's service account (what GET .../token returns)."""
        token = self.tokens.access_token(
            self.email, tuple(scopes or self.scopes), self.token_lifetime
        )
        with self._lock:
            self._issued.append(token)
        if self.call_log is not None:
            self.call_log.record("metadata", "GetToken", grpc.StatusCode.OK, self.email)
        return token

    def to_json(self) -> dict[str, Any]:
        return {
            "email": self.email,
            "projectId": self.project_id,
            "numericProjectId": self.numeric_project_id,
            "scopes": list(self.scopes),
            "tokenRequests": self.token_requests,
        }


def _text(body: str) -> web.Response:
    return web.Response(text=body, content_type="application/text", headers=_FLAVOR)


def _json(doc: Any) -> web.Response:
    return web.json_response(doc, headers=_FLAVOR)


def _flavored(handler: Handler) -> Handler:
    """Refuse requests without `Metadata-Flavor: Google` or forwarded by a proxy, as GCE does."""

    async def check(request: web.Request) -> web.Response:
        if request.headers.get("Metadata-Flavor") != "Google":
            return web.Response(
                status=403,
                text="Missing required header: Metadata-Flavor: Google\n",
                headers=_FLAVOR,
            )
        if "X-Forwarded-For" in request.headers:
            return web.Response(status=403, text="Request forwarded by a proxy\n", headers=_FLAVOR)
        return await handler(request)

    return check


def add_routes(app: web.Application, state: MetadataState) -> None:
    """Register the metadata server paths and its admin routes on `app`."""

    def account(request: web.Request) -> bool:
        return request.match_info["acct"] in ("default", state.email)

    def not_found() -> web.Response:
        return web.Response(status=404, text="Not Found\n", headers=_FLAVOR)

    async def ping(request: web.Request) -> web.Response:
        return _text("computeMetadata/\n")

    async def project_id(request: web.Request) -> web.Response:
        return _text(state.project_id)

    async def numeric_project_id(request: web.Request) -> web.Response:
        return _text(state.numeric_project_id)

    async def accounts(request: web.Request) -> web.Response:
        return _text(f"default/\n{state.email}/\n")

    async def info(request: web.Request) -> web.Response:
        if not account(request):
            return not_found()
        if request.query.get("recursive", "").lower() != "true":
            return _text("aliases\nemail\nidentity\nscopes\ntoken\n")
        return _json({"aliases": ["default"], "email": state.email, "scopes": list(state.scopes)})

    async def email(request: web.Request) -> web.Response:
        return _text(state.email) if account(request) else not_found()

    async def scopes(request: web.Request) -> web.Response:
        return _text("".join(f"{s}\n" for s in state.scopes)) if account(request) else not_found()

    async def token(request: web.Request) -> web.Response:
        if not account(request):
            return not_found()
        requested = [s for s in request.query.get("scopes", "").split(",") if s.strip()]
        access = state.mint([s.strip() for s in requested] or None)
        return _json(
            {"access_token": access, "expires_in": state.tokens.expires_in(access),
             "token_type": "Bearer"}
        )

    async def identity(request: web.Request) -> web.Response:
        if not account(request):
            return not_found()
        audience = request.query.get("audience", "")
        if not audience:
            return web.Response(status=400, text="non-empty audience parameter required\n")
        return _text(state.tokens.id_token(state.email, audience))

    async def get_admin(request: web.Request) -> web.Response:
        return web.json_response(state.to_json())

    async def put_admin(request: web.Request) -> web.Response:
        try:
            doc = await request.json()
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            return web.json_response({"error": "expected a JSON object"}, status=400)
        state.email = str(doc.get("email") or state.email)
        state.project_id = str(doc.get("projectId") or state.project_id)
        state.numeric_project_id = str(doc.get("numericProjectId") or state.numeric_project_id)
        if doc.get("scopes"):
            state.scopes = tuple(str(s) for s in doc["scopes"])
        return web.json_response(state.to_json())

    sa = _ROOT + "/instance/service-accounts"
    routes: list[tuple[str, Handler]] = [
        (_ROOT + "/project/project-id", project_id),
        (_ROOT + "/project/numeric-project-id", numeric_project_id),
        (sa + "/", accounts),
        (sa + "/{acct}/", info),
        (sa + "/{acct}/email", email),
        (sa + "/{acct}/scopes", scopes),
        (sa + "/{acct}/token", token),
        (sa + "/{acct}/identity", identity),
    ]
    if not any(r.canonical == "/" for r in app.router.resources()):
        routes.append(("/", ping))
    for path, handler in routes:
        app.router.add_get(path, _flavored(handler))
    app.router.add_get(METADATA_ADMIN_PREFIX, get_admin)
    app.router.add_put(METADATA_ADMIN_PREFIX, put_admin)
