"""Verifying the Google-signed ID tokens Cloud Scheduler and Cloud Tasks send the relay.

Why here: the signature check is google-auth's (`google.auth.jwt.decode`: RS256 against
Google's certificates, expiry with a small clock skew, the audience); only gcp/ imports
Google libraries. What google-auth's `id_token.verify_token` would add is a blocking
certificate fetch on every call, so the certificates are fetched here, on the event loop,
and kept as long as their Cache-Control allows (a token signed with a key not yet seen
refetches them, at most every few seconds). On top of the signature: the issuer must be
Google's, `email_verified` true and an `email` present; which email is allowed is the
relay's decision (the object's identity).
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import aiohttp
from google.auth import exceptions as auth_exc
from google.auth import jwt

__all__ = ["Claims", "IdTokenVerifier", "TokenRefused"]

_SKEW = 30  # seconds of clock skew allowed on iat/exp
_MIN_REFETCH = 5.0  # seconds between certificate fetches for an unknown key id
_DEFAULT_MAX_AGE = 300.0
_MAX_TOKEN = 8192
_TIMEOUT = aiohttp.ClientTimeout(total=10)
_ISSUERS = ("https://accounts.google.com", "accounts.google.com")
_REMEMBERED = 4096


class TokenRefused(Exception):
    """The token is not one the relay accepts; `reason` is a short metric label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Claims:
    email: str
    subject: str
    audience: str
    expires: float


def _header(token: str) -> dict[str, Any]:
    try:
        part = token.split(".", 1)[0]
        doc = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (ValueError, IndexError):
        raise TokenRefused("malformed", "the token is not a JWT") from None
    if not isinstance(doc, dict):
        raise TokenRefused("malformed", "the token is not a JWT")
    return doc


def _max_age(cache_control: str | None) -> float:
    match = re.search(r"max-age=(\d+)", cache_control or "")
    return min(float(match.group(1)), 86400.0) if match else _DEFAULT_MAX_AGE


class IdTokenVerifier:
    """Verifies ID tokens against certificates fetched from `certs_url` (kid -> PEM)."""

    def __init__(self, certs_url: str, issuer: str = "https://accounts.google.com") -> None:
        self.certs_url = certs_url
        self.issuers = {issuer, *_ISSUERS} if issuer in _ISSUERS else {issuer}
        self._certs: dict[str, str] = {}
        self._fresh_until = 0.0
        self._fetched_at = -_MIN_REFETCH
        self._lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None
        # Tokens already verified, until their expiry: the signature of one token is
        # checked once, however many calls it carries (Google reuses an ID token a while).
        self._verified: OrderedDict[str, tuple[str, Claims]] = OrderedDict()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _fetch(self) -> None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=_TIMEOUT)
        async with self._session.get(self.certs_url) as resp:
            if resp.status != 200:
                raise TokenRefused("certs", f"certificates unavailable (HTTP {resp.status})")
            doc = await resp.json(content_type=None)
            max_age = _max_age(resp.headers.get("Cache-Control"))
        if not isinstance(doc, dict) or not all(isinstance(v, str) for v in doc.values()):
            raise TokenRefused("certs", "certificates in an unexpected format")
        self._certs = {str(k): str(v) for k, v in doc.items()}
        self._fetched_at = time.monotonic()
        self._fresh_until = self._fetched_at + max_age

    async def _certs_for(self, kid: str) -> dict[str, str]:
        async with self._lock:
            now = time.monotonic()
            stale = now >= self._fresh_until
            unknown = kid not in self._certs and now - self._fetched_at >= _MIN_REFETCH
            if stale or unknown:
                try:
                    await self._fetch()
                except (aiohttp.ClientError, TimeoutError, ValueError) as e:
                    if not self._certs:
                        raise TokenRefused("certs", f"certificates unavailable: {e}") from None
            return self._certs

    async def verify(self, token: str, audience: str) -> Claims:
        """The claims of a valid token for `audience`; TokenRefused otherwise."""
        if not token or len(token) > _MAX_TOKEN or token.count(".") != 2:
            raise TokenRefused("malformed", "the token is not a JWT")
        hit = self._verified.get(token)
        if hit is not None and hit[0] == audience and hit[1].expires + _SKEW > time.time():
            self._verified.move_to_end(token)
            return hit[1]
        claims = await self._verify(token, audience)
        self._verified[token] = (audience, claims)
        while len(self._verified) > _REMEMBERED:
            self._verified.popitem(last=False)
        return claims

    async def _verify(self, token: str, audience: str) -> Claims:
        kid = _header(token).get("kid")
        certs = await self._certs_for(str(kid or ""))
        try:
            payload: dict[str, Any] = jwt.decode(  # type: ignore[no-untyped-call]
                token, certs=certs, audience=audience, clock_skew_in_seconds=_SKEW)
        except (auth_exc.GoogleAuthError, ValueError, TypeError) as e:
            text = str(e)
            reason = ("expired" if "expired" in text else "audience" if "audience" in text
                      else "signature")
            raise TokenRefused(reason, text[:200]) from None
        if payload.get("iss") not in self.issuers:
            raise TokenRefused("issuer", "the token was not issued by Google")
        if payload.get("email_verified") is not True:
            raise TokenRefused("email", "the token's email is not verified")
        email = payload.get("email")
        if not isinstance(email, str) or "@" not in email:
            raise TokenRefused("email", "the token names no email")
        return Claims(email.lower(), str(payload.get("sub") or ""), audience,
                      float(payload.get("exp") or 0))
