"""Security Token Service for the emulator: Kubernetes ServiceAccount tokens in, federated
Google access tokens out, as Google's STS does for a GKE cluster or a Workload Identity
Federation provider.

Why verify for real: the operator's Workload Identity chain is only proven if the token it
presents is checked the way Google checks it. The KSA token is verified against the
cluster's own OIDC issuer: `<issuer>/.well-known/openid-configuration` -> `jwks_uri` -> the
RS256 signature, the issuer, an accepted audience, the expiry (against real time: the API
server's clock, not the emulator's movable one). The federated token is an access token
minted by the shared TokenIssuer for the principal
`principal://iam.googleapis.com/projects/<number>/locations/global/workloadIdentityPools/
<pool>/subject/ns/<NS>/sa/<KSA>`, so IAM and the Scheduler/Tasks emulators know the caller.

Google-compatible route:
- POST /v1/token (form or JSON): grant_type token-exchange, subject_token_type jwt,
  subject_token, audience, scope -> {"access_token", "issued_token_type", "token_type",
  "expires_in"}; OAuth errors {"error", "error_description"} otherwise.

Admin routes (JSON, prefix /emulator/v1/sts):
- GET    /trusts                       -> {"trusts": [...]}
- POST   /trusts {"audience", "issuer", "pool", "projectNumber", "tokenAudiences"?,
                  "caPem"?}            -> the trust (replaces one with the same audience)
- DELETE /trusts?audience=...          -> {}
- GET    /exchanges                    -> {"exchanges": [{"audience", "principal", "status",
                                          "error"}]}
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import grpc
from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from gcpcall.emulator.core import CallLog, TokenIssuer

__all__ = [
    "STS_ADMIN_PREFIX",
    "StsExchange",
    "StsState",
    "WorkloadIdentityTrust",
    "add_routes",
]

STS_ADMIN_PREFIX = "/emulator/v1/sts"
SERVICE = "sts.googleapis.com"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105 - a URN
JWT_TYPES = frozenset(
    {"urn:ietf:params:oauth:token-type:jwt", "urn:ietf:params:oauth:token-type:id_token"}
)
ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105 - a URN
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
_LEEWAY = 30.0


@dataclass(frozen=True)
class WorkloadIdentityTrust:
    """An STS audience the emulator accepts, and the cluster issuer behind it."""

    audience: str  # "identitynamespace:<pool>:<cluster url>" or a provider's resource name
    issuer: str  # the cluster's ServiceAccount issuer URL
    pool: str  # "<project>.svc.id.goog" or a pool id
    project_number: str
    token_audiences: tuple[str, ...]  # accepted `aud` of the KSA token
    ca_pem: str | None = None  # the issuer's TLS CA when it is not publicly trusted

    @classmethod
    def gke(
        cls,
        *,
        pool: str,
        cluster_url: str,
        issuer: str,
        project_number: str = "123456789012",
        ca_pem: str | None = None,
    ) -> WorkloadIdentityTrust:
        """GKE's form: audience identitynamespace:<pool>:<cluster url>, KSA tokens for <pool>."""
        return cls(
            audience=f"identitynamespace:{pool}:{cluster_url}",
            issuer=issuer,
            pool=pool,
            project_number=project_number,
            token_audiences=(pool,),
            ca_pem=ca_pem,
        )

    def principal(self, namespace: str, service_account: str) -> str:
        return (
            f"principal://iam.googleapis.com/projects/{self.project_number}/locations/global/"
            f"workloadIdentityPools/{self.pool}/subject/ns/{namespace}/sa/{service_account}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "audience": self.audience,
            "issuer": self.issuer,
            "pool": self.pool,
            "projectNumber": self.project_number,
            "tokenAudiences": list(self.token_audiences),
            "caPem": self.ca_pem,
        }


@dataclass(frozen=True)
class StsExchange:
    """One token exchange the emulator answered (never the tokens)."""

    audience: str
    principal: str | None
    status: int
    error: str | None = None


class _Refused(Exception):
    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


@dataclass
class _Keys:
    keys: dict[str, rsa.RSAPublicKey] = field(default_factory=dict)


class StsState:
    """Trusted audiences, cached issuer keys and the record of exchanges."""

    def __init__(
        self,
        tokens: TokenIssuer,
        trusts: Sequence[WorkloadIdentityTrust] = (),
        *,
        call_log: CallLog | None = None,
        federated_lifetime: int = 3600,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.tokens = tokens
        self.call_log = call_log
        self.federated_lifetime = federated_lifetime
        self._wall_clock = wall_clock
        self._trusts: dict[str, WorkloadIdentityTrust] = {t.audience: t for t in trusts}
        self._keys: dict[str, _Keys] = {}
        self._keys_lock = asyncio.Lock()
        self._lock = threading.Lock()
        self._exchanges: list[StsExchange] = []
        self._session: aiohttp.ClientSession | None = None

    def trust(self, trust: WorkloadIdentityTrust) -> None:
        """Accept `trust.audience` (replacing an earlier trust for it)."""
        with self._lock:
            self._trusts[trust.audience] = trust

    def untrust(self, audience: str) -> None:
        with self._lock:
            self._trusts.pop(audience, None)

    def trusts(self) -> list[WorkloadIdentityTrust]:
        with self._lock:
            return list(self._trusts.values())

    def exchanges(self) -> list[StsExchange]:
        with self._lock:
            return list(self._exchanges)

    def clear_exchanges(self) -> None:
        with self._lock:
            self._exchanges.clear()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def exchange(self, params: Mapping[str, str]) -> tuple[str, str]:
        """Verify the subject token; (federated access token, principal). Raises _Refused."""
        if params.get("grant_type") != TOKEN_EXCHANGE:
            raise _Refused("unsupported_grant_type", "Unsupported grant type.")
        if params.get("subject_token_type") not in JWT_TYPES:
            raise _Refused("invalid_request", "Invalid subject token type.")
        requested = params.get("requested_token_type") or ACCESS_TOKEN
        if requested != ACCESS_TOKEN:
            raise _Refused("invalid_request", "Invalid requested token type.")
        audience = params.get("audience", "")
        with self._lock:
            trust = self._trusts.get(audience)
        if trust is None:
            raise _Refused(
                "invalid_target",
                'The target service indicated by the "audience" parameters is invalid. This '
                "might either be because the pool or provider is disabled or deleted or "
                "because it doesn't exist.",
            )
        subject = params.get("subject_token", "")
        claims = await self._verify(trust, subject)
        namespace, service_account = _ksa(claims)
        principal = trust.principal(namespace, service_account)
        scopes = (params.get("scope") or CLOUD_PLATFORM).split()
        token = self.tokens.access_token(principal, scopes, self.federated_lifetime)
        return token, principal

    async def _verify(self, trust: WorkloadIdentityTrust, token: str) -> dict[str, Any]:
        try:
            header_b64, claims_b64, signature_b64 = token.split(".")
            header = json.loads(_b64decode(header_b64))
            claims: dict[str, Any] = json.loads(_b64decode(claims_b64))
            signature = _b64decode(signature_b64)
        except (ValueError, UnicodeError):
            raise _Refused("invalid_grant", "Unable to parse the ID Token.") from None
        if not isinstance(header, dict) or header.get("alg") != "RS256":
            raise _Refused("invalid_grant", "The ID Token's signing algorithm is not supported.")
        if claims.get("iss") != trust.issuer:
            raise _Refused(
                "invalid_grant",
                f"The issuer in ID Token {claims.get('iss')} does not match the expected "
                f"ones: {trust.issuer}.",
            )
        key = await self._key(trust, str(header.get("kid", "")))
        try:
            key.verify(
                signature,
                f"{header_b64}.{claims_b64}".encode("ascii"),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except InvalidSignature:
            raise _Refused("invalid_grant", "Invalid ID Token signature.") from None
        audiences = claims.get("aud")
        audiences = [audiences] if isinstance(audiences, str) else list(audiences or [])
        if not set(audiences) & set(trust.token_audiences):
            raise _Refused(
                "invalid_grant",
                f"The audience in ID Token {audiences} does not match the expected audience "
                f"{list(trust.token_audiences)}.",
            )
        now = self._wall_clock()
        if float(claims.get("exp", 0)) + _LEEWAY < now:
            raise _Refused("invalid_grant", "The ID Token has expired.")
        if float(claims.get("nbf", claims.get("iat", 0))) - _LEEWAY > now:
            raise _Refused("invalid_grant", "The ID Token is not yet valid.")
        return claims

    async def _key(self, trust: WorkloadIdentityTrust, kid: str) -> rsa.RSAPublicKey:
        async with self._keys_lock:
            cached = self._keys.get(trust.issuer)
            if cached is None or kid not in cached.keys:  # first use, or the issuer rotated
                cached = _Keys(await self._fetch_keys(trust))
                self._keys[trust.issuer] = cached
        key = cached.keys.get(kid)
        if key is None:
            raise _Refused("invalid_grant", f"No key of the issuer matches the ID Token kid {kid}.")
        return key

    async def _fetch_keys(self, trust: WorkloadIdentityTrust) -> dict[str, rsa.RSAPublicKey]:
        context: ssl.SSLContext | bool = True
        if trust.ca_pem:
            context = ssl.create_default_context(cadata=trust.ca_pem)
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        discovery_url = trust.issuer.rstrip("/") + "/.well-known/openid-configuration"
        try:
            async with self._session.get(discovery_url, ssl=context) as response:
                response.raise_for_status()
                discovery = await response.json(content_type=None)
            jwks_uri = str(discovery["jwks_uri"])
            async with self._session.get(jwks_uri, ssl=context) as response:
                response.raise_for_status()
                jwks = await response.json(content_type=None)
        except (aiohttp.ClientError, KeyError, TypeError, ValueError) as error:
            raise _Refused(
                "invalid_grant",
                f"Unable to fetch the issuer's keys from {discovery_url}: {error}",
            ) from None
        keys: dict[str, rsa.RSAPublicKey] = {}
        for jwk in jwks.get("keys", []):
            if jwk.get("kty") == "RSA" and "n" in jwk and "e" in jwk:
                numbers = rsa.RSAPublicNumbers(_b64int(jwk["e"]), _b64int(jwk["n"]))
                keys[str(jwk.get("kid", ""))] = numbers.public_key()
        return keys

    def _record(self, exchange: StsExchange) -> None:
        with self._lock:
            self._exchanges.append(exchange)
        if self.call_log is not None:
            code = grpc.StatusCode.OK if exchange.status == 200 else _code(exchange.status)
            self.call_log.record(SERVICE, "ExchangeToken", code, exchange.principal)


def _code(status: int) -> grpc.StatusCode:
    return {
        400: grpc.StatusCode.INVALID_ARGUMENT,
        401: grpc.StatusCode.UNAUTHENTICATED,
        403: grpc.StatusCode.PERMISSION_DENIED,
    }.get(status, grpc.StatusCode.UNKNOWN)


def _ksa(claims: Mapping[str, Any]) -> tuple[str, str]:
    subject = str(claims.get("sub", ""))
    parts = subject.split(":")
    if len(parts) != 4 or parts[:2] != ["system", "serviceaccount"]:
        raise _Refused("invalid_grant", f"The ID Token subject {subject} is not a ServiceAccount.")
    return parts[2], parts[3]


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64int(text: str) -> int:
    return int.from_bytes(_b64decode(text), "big")


def add_routes(app: web.Application, state: StsState) -> None:
    """Register the STS token endpoint and the STS admin routes on `app`."""

    async def token(request: web.Request) -> web.Response:
        params: dict[str, str]
        if request.content_type == "application/json":
            try:
                doc = await request.json()
            except ValueError:
                doc = None
            params = {str(k): str(v) for k, v in doc.items()} if isinstance(doc, dict) else {}
        else:
            form = await request.post()
            params = {k: str(v) for k, v in form.items()}
        audience = params.get("audience", "")
        try:
            access, principal = await state.exchange(params)
        except _Refused as refused:
            state._record(StsExchange(audience, None, refused.status, refused.description))
            return web.json_response(
                {"error": refused.error, "error_description": refused.description},
                status=refused.status,
            )
        state._record(StsExchange(audience, principal, 200))
        return web.json_response(
            {
                "access_token": access,
                "issued_token_type": ACCESS_TOKEN,
                "token_type": "Bearer",
                "expires_in": state.tokens.expires_in(access),
            }
        )

    async def list_trusts(request: web.Request) -> web.Response:
        return web.json_response({"trusts": [t.to_json() for t in state.trusts()]})

    async def add_trust(request: web.Request) -> web.Response:
        try:
            doc = await request.json()
            trust = WorkloadIdentityTrust(
                audience=str(doc["audience"]),
                issuer=str(doc["issuer"]),
                pool=str(doc["pool"]),
                project_number=str(doc.get("projectNumber") or "123456789012"),
                token_audiences=tuple(str(a) for a in doc.get("tokenAudiences") or [doc["pool"]]),
                ca_pem=doc.get("caPem") or None,
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return web.json_response(
                {
                    "error": 'expected {"audience", "issuer", "pool", "projectNumber"?, '
                    '"tokenAudiences"?, "caPem"?}'
                },
                status=400,
            )
        state.trust(trust)
        return web.json_response(trust.to_json())

    async def delete_trust(request: web.Request) -> web.Response:
        state.untrust(request.query.get("audience", ""))
        return web.json_response({})

    async def exchanges(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "exchanges": [
                    {
                        "audience": e.audience,
                        "principal": e.principal,
                        "status": e.status,
                        "error": e.error,
                    }
                    for e in state.exchanges()
                ]
            }
        )

    app.router.add_post("/v1/token", token)
    app.router.add_get(STS_ADMIN_PREFIX + "/trusts", list_trusts)
    app.router.add_post(STS_ADMIN_PREFIX + "/trusts", add_trust)
    app.router.add_delete(STS_ADMIN_PREFIX + "/trusts", delete_trust)
    app.router.add_get(STS_ADMIN_PREFIX + "/exchanges", exchanges)
