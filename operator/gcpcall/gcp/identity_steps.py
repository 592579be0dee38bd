"""Each step of the identity chain as one async call, and the error that names the step.

Why by hand instead of google-auth's `identity_pool` / `impersonated_credentials`: those
refresh synchronously with `requests` (a thread per refresh) and would need the async
Kubernetes TokenRequest to be called back from that thread. Each step here is one HTTP
request on the operator's event loop (STS token exchange: one form POST; generateAccessToken:
one JSON POST; the metadata server: one GET), with Google's own error text kept for the
diagnostics. google-auth is still used for the one thing it does best: finding the
operator's Application Default Credentials when no metadata server is configured (a key
file, gcloud user credentials), refreshed in a worker thread.

No token, assertion or response body of a successful call is ever logged or put in an
exception message.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import aiohttp

from gcpcall.api.observed import parse_time
from gcpcall.config import Endpoints
from gcpcall.gcp.identity_metrics import count_request
from gcpcall.gcp.tokens import AccessToken

__all__ = [
    "CLOUD_PLATFORM",
    "IdentityNotReady",
    "IdentitySteps",
    "adc_email",
    "parse_google_time",
]

CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105 - a URN
JWT = "urn:ietf:params:oauth:token-type:jwt"
ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105 - a URN
_TIMEOUT = aiohttp.ClientTimeout(total=30)
_MAX_MESSAGE = 500


class IdentityNotReady(Exception):
    """The identity chain failed at `step` (e.g. "ServiceAccount", "TokenRequest", "STS").

    `status` is the HTTP status of the failing answer when there was one (401 tells the
    resolver a source token was rejected and is worth replacing once).
    """

    def __init__(self, step: str, message: str, *, status: int | None = None) -> None:
        super().__init__(f"{step}: {message}")
        self.step = step
        self.message = message
        self.status = status


def parse_google_time(value: str) -> float:
    """RFC 3339 as Google writes it ("2020-04-07T15:01:23.045123456Z") to POSIX seconds."""
    return parse_time(value).timestamp()


def _jwt_expiry(token: str) -> float | None:
    """The `exp` of a JWT, read without verifying it (it is ours, fresh from Google)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"])
    except (IndexError, ValueError, KeyError, TypeError):
        return None


def _google_message(status: int, body: bytes) -> str:
    """Google's error text from an error answer (JSON API error or OAuth error shape)."""
    try:
        doc: Any = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
        return f"HTTP {status}: {text[:_MAX_MESSAGE]}" if text else f"HTTP {status}"
    if isinstance(doc, dict):
        error = doc.get("error")
        if isinstance(error, dict):  # {"error": {"code", "message", "status"}}
            code = error.get("status") or status
            return f"{code}: {str(error.get('message', ''))[:_MAX_MESSAGE]}"
        if isinstance(error, str):  # OAuth: {"error": "invalid_grant", "error_description"}
            description = str(doc.get("error_description", ""))[:_MAX_MESSAGE]
            return f"{error}: {description}" if description else error
    return f"HTTP {status}"


def adc_email(credentials: Any) -> str | None:
    """The service account email of refreshed google-auth credentials, None for a user.

    `service_account_email` is what google-auth gives for every credential that is a
    service account: a key file (`service_account.Credentials`: the key's client_email),
    the metadata server (`compute_engine.Credentials`: "default" until a refresh reads the
    real email), impersonation (`impersonated_credentials`: the target) and Workload
    Identity Federation with impersonation (`external_account`). gcloud user credentials
    have none (their `account` is a person, not a service account a token can name).
    """
    for attribute in ("service_account_email", "signer_email"):
        email = getattr(credentials, attribute, None)
        if isinstance(email, str) and "@" in email:
            return email
    return None


class IdentitySteps:
    """The HTTP requests of the chain, against the endpoints in the operator's settings."""

    def __init__(self, endpoints: Endpoints, *, clock: Callable[[], float] = time.time) -> None:
        self.endpoints = endpoints
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._adc: Any = None  # google.auth credentials, found once
        self._adc_lock = asyncio.Lock()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=_TIMEOUT)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _send(
        self,
        step: str,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        data: Mapping[str, str] | None = None,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> tuple[int, bytes]:
        try:
            async with self._http().request(
                method, url, headers=headers, data=data, json=json_body, params=params
            ) as response:
                body = await response.read()
        except (aiohttp.ClientError, TimeoutError) as error:
            count_request(step, ok=False)
            raise IdentityNotReady(
                step, f"cannot reach {url}: {type(error).__name__}: {error}"
            ) from None
        if response.status >= 400:
            count_request(step, ok=False)
            raise IdentityNotReady(
                step, _google_message(response.status, body), status=response.status
            )
        count_request(step, ok=True)
        return response.status, body

    @staticmethod
    def _json(step: str, body: bytes, *fields: str) -> dict[str, Any]:
        try:
            doc: Any = json.loads(body)
        except ValueError:
            doc = None
        if not isinstance(doc, dict) or any(not doc.get(f) for f in fields):
            raise IdentityNotReady(step, f"unexpected answer (expected {', '.join(fields)})")
        return doc

    async def sts_exchange(
        self, subject_token: str, audience: str, scopes: Sequence[str]
    ) -> AccessToken:
        """STS token exchange of a Kubernetes ServiceAccount token for a federated token."""
        _, body = await self._send(
            "STS",
            "POST",
            self.endpoints.sts,
            data={
                "grant_type": TOKEN_EXCHANGE,
                "audience": audience,
                "scope": " ".join(scopes),
                "requested_token_type": ACCESS_TOKEN,
                "subject_token": subject_token,
                "subject_token_type": JWT,
            },
        )
        doc = self._json("STS", body, "access_token")
        lifetime = float(doc.get("expires_in") or 3600)
        return AccessToken(str(doc["access_token"]), None, self._clock() + lifetime)

    async def generate_access_token(
        self,
        source: AccessToken,
        email: str,
        scopes: Sequence[str],
        *,
        delegates: Sequence[str] = (),
        lifetime_seconds: int = 3600,
    ) -> AccessToken:
        """IAM Credentials generateAccessToken for `email`, as the holder of `source`."""
        base = self.endpoints.iam_credentials.rstrip("/")
        url = f"{base}/v1/projects/-/serviceAccounts/{quote(email, safe='@')}:generateAccessToken"
        payload: dict[str, Any] = {"scope": list(scopes), "lifetime": f"{lifetime_seconds}s"}
        if delegates:
            payload["delegates"] = [f"projects/-/serviceAccounts/{d}" for d in delegates]
        headers = {"Authorization": f"Bearer {source.value}"} if source.value else {}
        _, body = await self._send(
            "GenerateAccessToken", "POST", url, headers=headers, json_body=payload
        )
        doc = self._json("GenerateAccessToken", body, "accessToken", "expireTime")
        try:
            expires = parse_google_time(str(doc["expireTime"]))
        except ValueError:
            raise IdentityNotReady("GenerateAccessToken", "unreadable expireTime") from None
        return AccessToken(str(doc["accessToken"]), email, expires)

    async def generate_id_token(
        self, source: AccessToken, email: str, audience: str, *, delegates: Sequence[str] = ()
    ) -> AccessToken:
        """IAM Credentials generateIdToken: an OIDC ID token for `email` with `audience`
        (with the email claim), as the holder of `source`. Its expiry is read from the
        token itself, which Google signs for an hour."""
        base = self.endpoints.iam_credentials.rstrip("/")
        url = f"{base}/v1/projects/-/serviceAccounts/{quote(email, safe='@')}:generateIdToken"
        payload: dict[str, Any] = {"audience": audience, "includeEmail": True}
        if delegates:
            payload["delegates"] = [f"projects/-/serviceAccounts/{d}" for d in delegates]
        headers = {"Authorization": f"Bearer {source.value}"} if source.value else {}
        _, body = await self._send("GenerateIdToken", "POST", url, headers=headers,
                                   json_body=payload)
        doc = self._json("GenerateIdToken", body, "token")
        token = str(doc["token"])
        return AccessToken(token, email, _jwt_expiry(token) or self._clock() + 3600)

    async def metadata_token(self, scopes: Sequence[str]) -> AccessToken:
        """The default service account's token and email from the GCE metadata server."""
        host = self.endpoints.metadata_host or "metadata.google.internal"
        root = host if "://" in host else f"http://{host}"
        base = f"{root.rstrip('/')}/computeMetadata/v1/instance/service-accounts/default/"
        headers = {"Metadata-Flavor": "Google"}
        _, body = await self._send(
            "Metadata",
            "GET",
            base + "token",
            headers=headers,
            params={"scopes": ",".join(scopes)},
        )
        doc = self._json("Metadata", body, "access_token")
        lifetime = float(doc.get("expires_in") or 3600)
        expires = self._clock() + lifetime
        _, email = await self._send("Metadata", "GET", base + "email", headers=headers)
        return AccessToken(str(doc["access_token"]), email.decode().strip() or None, expires)

    async def adc_token(self, scopes: Sequence[str]) -> AccessToken:
        """google-auth's Application Default Credentials, found and refreshed off the loop."""
        async with self._adc_lock:
            try:
                credentials = await asyncio.to_thread(self._refresh_adc, tuple(scopes))
            except Exception as error:  # google-auth raises many kinds; all mean "no ADC"
                count_request("ADC", ok=False)
                raise IdentityNotReady("ADC", f"{type(error).__name__}: {error}") from None
        count_request("ADC", ok=True)
        expiry = getattr(credentials, "expiry", None)
        expires = (
            expiry.replace(tzinfo=datetime.UTC).timestamp()
            if isinstance(expiry, datetime.datetime)
            else self._clock() + 3600
        )
        return AccessToken(str(credentials.token), adc_email(credentials), expires)

    def _refresh_adc(self, scopes: tuple[str, ...]) -> Any:
        # imported here: only an operator really using ADC pays for google-auth + requests
        import google.auth
        import google.auth.transport.requests

        if self._adc is None:
            self._adc, _ = google.auth.default(scopes=list(scopes))
        self._adc.refresh(google.auth.transport.requests.Request())
        return self._adc
