"""The emulator's shared machinery: clock, HTTP dispatch, token minting, faults, call log.

Why: Cloud Scheduler and Cloud Tasks both run work at a time, send HTTP requests with
Google-minted tokens, and must be testable without waiting for the wall clock or reaching
Google. Both service halves take these pieces from one place, so a test that advances the
clock, routes a Google host to a local server, injects faults (RPC errors, or dropped
responses of HTTP dispatches) or reads the call log affects both the same way.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import hashlib
import json
import random
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

__all__ = [
    "DEADLINE_EXCEEDED",
    "AccessTokenInfo",
    "CallLog",
    "CallRecord",
    "Clock",
    "Dispatcher",
    "DropRule",
    "DroppedResponse",
    "FaultInjector",
    "FaultRule",
    "HttpCall",
    "HttpOutcome",
    "TokenIssuer",
]

_UTC = datetime.UTC


class Clock:
    """The emulator's notion of now: real time plus an offset that tests move forward.

    Thread-safe: tests may call `advance()` from another thread than the emulator's loop.
    """

    def __init__(self, offset_seconds: float = 0.0) -> None:
        self._offset = offset_seconds
        self._lock = threading.Lock()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    def now(self) -> datetime.datetime:
        """Now, timezone-aware UTC."""
        return datetime.datetime.now(_UTC) + datetime.timedelta(seconds=self._offset)

    def timestamp(self) -> float:
        """Now, as POSIX seconds."""
        return time.time() + self._offset

    @property
    def offset(self) -> float:
        """How far the clock has been advanced beyond real time, in seconds."""
        return self._offset

    def advance(self, seconds: float) -> None:
        """Move the clock forward; every `sleep()` whose end has come wakes up."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        with self._lock:
            self._offset += seconds
            waiters = list(self._waiters)
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # a closed loop has no sleeper left
                loop.call_soon_threadsafe(event.set)

    async def sleep(self, seconds: float) -> None:
        """Sleep `seconds` of clock time: real time, but cut short by `advance()`."""
        await self.sleep_until_timestamp(self.timestamp() + max(0.0, seconds))

    async def sleep_until(self, when: datetime.datetime) -> None:
        """Sleep until the clock reads `when` (or later)."""
        await self.sleep_until_timestamp(when.timestamp())

    async def sleep_until_timestamp(self, deadline: float) -> None:
        """Sleep until the clock reads the POSIX time `deadline`."""
        loop = asyncio.get_running_loop()
        while True:
            event = asyncio.Event()
            entry = (loop, event)
            with self._lock:  # register before reading the time: no advance is missed
                self._waiters.add(entry)
            try:
                remaining = deadline - self.timestamp()
                if remaining <= 0:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), remaining)
            finally:
                with self._lock:
                    self._waiters.discard(entry)


@dataclass(frozen=True)
class HttpCall:
    """One outgoing HTTP attempt (a Scheduler job run or a Tasks dispatch)."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    deadline_seconds: float


@dataclass(frozen=True)
class HttpOutcome:
    """What came back from one HttpCall."""

    status: int | None  # None: connection error or deadline exceeded
    body: bytes
    error: str | None  # a short reason when status is None

    @property
    def deadline_exceeded(self) -> bool:
        """True when the attempt ran out of time before a response came."""
        return self.status is None and self.error == DEADLINE_EXCEEDED


DEADLINE_EXCEEDED = "deadline exceeded"
CONNECTION_RESET = "connection reset before the response arrived (injected)"
_DROP_CODES = {"DEADLINE_EXCEEDED": DEADLINE_EXCEEDED, "UNAVAILABLE": CONNECTION_RESET}
_MAX_DROPPED_KEPT = 1_000


@dataclass
class DropRule:
    """Drop the responses of the next `remaining` matching dispatches.

    The request is really sent and the target really handles it; then the emulator
    reports the attempt as failed without a response, as if the deadline had passed
    before the answer (`code` DEADLINE_EXCEEDED: what Cloud Scheduler's attempt_deadline
    and Cloud Tasks' dispatch_deadline document - "the request is cancelled and the
    attempt is marked as a DEADLINE_EXCEEDED failure", and the worker may have processed
    it) or as if the connection broke (`code` UNAVAILABLE). The job or queue then retries
    per its retry policy, and nothing counts the lost answer as a response.
    """

    id: int
    remaining: int
    host: str | None  # the host the job or task addressed (before the host map)
    path_prefix: str | None
    code: str  # "DEADLINE_EXCEEDED" | "UNAVAILABLE"

    def matches(self, url: str) -> bool:
        parts = urlsplit(url)
        host_ok = self.host is None or (parts.hostname or "").lower() == self.host
        return host_ok and (
            self.path_prefix is None or (parts.path or "/").startswith(self.path_prefix)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "remaining": self.remaining,
            "host": self.host,
            "path_prefix": self.path_prefix,
            "code": self.code,
        }


@dataclass(frozen=True)
class DroppedResponse:
    """A dispatch whose answer the emulator threw away."""

    rule: int
    method: str
    url: str  # as the job or task addressed it
    status: int  # what the target answered
    code: str
    time: datetime.datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "method": self.method,
            "url": self.url,
            "status": self.status,
            "code": self.code,
            "time": self.time.isoformat(),
        }


class Dispatcher:
    """Sends HttpCalls; its host map routes `https://<host>/...` to a local server instead.

    The attempt deadline is measured on the emulator's clock when one is given, so a test
    can make a hanging target time out by advancing the clock. Drop rules
    (`drop_responses`) make matching attempts fail after the target has answered.

    The only headers sent are the call's own (aiohttp adds no User-Agent and no
    Content-Type), so each service decides them as its reference says.
    """

    def __init__(
        self,
        host_map: Mapping[str, str] | None = None,
        *,
        clock: Clock | None = None,
    ) -> None:
        self._host_map: dict[str, str] = {
            host.lower(): url.rstrip("/") for host, url in (host_map or {}).items()
        }
        self._clock = clock or Clock()
        self._session: aiohttp.ClientSession | None = None
        self._drops: list[DropRule] = []
        self._dropped: list[DroppedResponse] = []
        self._drop_ids = 0
        self._lock = threading.Lock()

    def set_host_route(self, host: str, base_url: str) -> None:
        """Route requests for `host` (e.g. "compute.googleapis.com") to `base_url`."""
        self._host_map[host.lower()] = base_url.rstrip("/")

    def remove_host_route(self, host: str) -> None:
        """Forget the route for `host`; its requests go to the real host again."""
        self._host_map.pop(host.lower(), None)

    def host_map(self) -> dict[str, str]:
        """A copy of the current host map."""
        return dict(self._host_map)

    def resolve(self, url: str) -> str:
        """The URL a request for `url` is really sent to, after the host map."""
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        base = self._host_map.get(host)
        if base is None:
            return url
        target = urlsplit(base)
        path = target.path.rstrip("/") + (parts.path or "/")
        return urlunsplit((target.scheme, target.netloc, path, parts.query, ""))

    # -- dropped responses ---------------------------------------------------------------

    def drop_responses(
        self,
        count: int = 1,
        *,
        host: str | None = None,
        path_prefix: str | None = None,
        code: str = "DEADLINE_EXCEEDED",
    ) -> DropRule:
        """Drop the responses of the next `count` dispatches matching host / path prefix."""
        if count < 1:
            raise ValueError("count must be at least 1")
        if code not in _DROP_CODES:
            raise ValueError(f"code must be one of {', '.join(_DROP_CODES)}")
        if path_prefix is not None and not path_prefix.startswith("/"):
            raise ValueError("path_prefix must start with '/'")
        with self._lock:
            self._drop_ids += 1
            rule = DropRule(
                self._drop_ids, count, host.lower() if host else None, path_prefix, code
            )
            self._drops.append(rule)
        return rule

    def drop_rules(self) -> list[DropRule]:
        """The rules with dispatches left to drop."""
        with self._lock:
            return [DropRule(**vars(rule)) for rule in self._drops]

    def dropped(self) -> list[DroppedResponse]:
        """The dispatches whose responses were dropped, oldest first."""
        with self._lock:
            return list(self._dropped)

    def clear_drops(self) -> None:
        """Remove every drop rule and forget the dropped dispatches."""
        with self._lock:
            self._drops.clear()
            self._dropped.clear()

    def _take_drop(self, call: HttpCall, status: int) -> DropRule | None:
        with self._lock:
            for rule in self._drops:
                if rule.matches(call.url):
                    rule.remaining -= 1
                    if rule.remaining <= 0:
                        self._drops.remove(rule)
                    self._dropped.append(
                        DroppedResponse(
                            rule.id, call.method, call.url, status, rule.code, self._clock.now()
                        )
                    )
                    del self._dropped[:-_MAX_DROPPED_KEPT]
                    return rule
        return None

    # -- sending -------------------------------------------------------------------------

    async def send(self, call: HttpCall) -> HttpOutcome:
        """Send one attempt; never raises for network trouble, it reports it."""
        request = asyncio.ensure_future(self._request(call))
        deadline = asyncio.ensure_future(self._clock.sleep(call.deadline_seconds))
        try:
            await asyncio.wait({request, deadline}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            deadline.cancel()
            if not request.done():
                request.cancel()
        if request.cancelled() or not request.done():
            return HttpOutcome(status=None, body=b"", error=DEADLINE_EXCEEDED)
        outcome = request.result()
        if outcome.status is not None:
            rule = self._take_drop(call, outcome.status)
            if rule is not None:
                return HttpOutcome(status=None, body=b"", error=_DROP_CODES[rule.code])
        return outcome

    async def _request(self, call: HttpCall) -> HttpOutcome:
        session = self._ensure_session()
        url = self.resolve(call.url)
        headers = dict(call.headers)
        if url != call.url:  # the receiver sees the host the job addressed
            original = urlsplit(call.url)
            headers.setdefault("Host", original.netloc)
        try:
            async with session.request(
                call.method,
                url,
                headers=headers,
                data=call.body if call.body else None,
                allow_redirects=True,
            ) as response:
                body = await response.read()
                return HttpOutcome(status=response.status, body=body, error=None)
        except (aiohttp.ClientError, OSError) as error:
            return HttpOutcome(status=None, body=b"", error=f"{type(error).__name__}: {error}")

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None),
                auto_decompress=True,
                skip_auto_headers=("User-Agent", "Content-Type"),
            )
        return self._session

    async def close(self) -> None:
        """Close the HTTP session (call from the loop that used it)."""
        if self._session is not None:
            await self._session.close()
            self._session = None


@dataclass(frozen=True)
class AccessTokenInfo:
    """What the emulator remembers about an OAuth access token it minted."""

    email: str
    scopes: tuple[str, ...]
    expires_at: datetime.datetime


class TokenIssuer:
    """Mints the tokens Google would mint for a service account, signed by its own RSA key.

    ID tokens are RS256 JWTs whose `kid` names the key in `jwks()` and `pem_certs()`, so a
    receiver verifies them exactly as it verifies Google's, pointed at the emulator's certs
    URL. Token times follow real time (`now`), since receivers check them against theirs.
    """

    def __init__(
        self,
        issuer: str = "https://accounts.google.com",
        *,
        now: Callable[[], float] = time.time,
        key_size: int = 2048,
        max_access_lifetime: int | None = None,
    ) -> None:
        self.issuer = issuer
        self._now = now
        # Shorter access tokens than asked for (Google's are 3600 s): compresses an hour of
        # token refreshes into minutes for the token benchmark (`--token-lifetime`).
        self.max_access_lifetime = max_access_lifetime
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
        public_der = self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.key_id = hashlib.sha256(public_der).hexdigest()[:40]
        self._cert_pem = self._self_signed_cert()
        self._access: dict[str, AccessTokenInfo] = {}
        self._lock = threading.Lock()

    def _self_signed_cert(self) -> str:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gcpcall-emulator")])
        now = datetime.datetime.fromtimestamp(self._now(), _UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .sign(self._key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")

    @staticmethod
    def subject_id(email: str) -> str:
        """A stable numeric subject for an account, as Google's `sub` claim is numeric."""
        digest = hashlib.sha256(email.lower().encode()).digest()
        return str(10**20 + int.from_bytes(digest[:8], "big"))

    def id_token(self, email: str, audience: str, lifetime: int = 3600, *,
                 issued_ago: int = 0, email_verified: bool = True) -> str:
        """An OIDC ID token for `email` with the given audience. `issued_ago` back-dates it
        (a test's expired token: signed by the real key, but past its `exp`)."""
        issued = int(self._now()) - issued_ago
        claims = {
            "iss": self.issuer,
            "aud": audience,
            "azp": self.subject_id(email),
            "sub": self.subject_id(email),
            "email": email,
            "email_verified": email_verified,
            "iat": issued,
            "exp": issued + lifetime,
        }
        header = {"alg": "RS256", "typ": "JWT", "kid": self.key_id}
        signing_input = _b64url_json(header) + "." + _b64url_json(claims)
        signature = self._key.sign(
            signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256()
        )
        return signing_input + "." + _b64url(signature)

    def verify_id_token(self, token: str) -> dict[str, Any] | None:
        """The claims of an unexpired ID token this issuer signed; None otherwise."""
        try:
            header_part, claims_part, signature_part = token.split(".")
            header = json.loads(_b64url_decode(header_part))
            claims: dict[str, Any] = json.loads(_b64url_decode(claims_part))
            if header.get("kid") != self.key_id or header.get("alg") != "RS256":
                return None
            self._key.public_key().verify(
                _b64url_decode(signature_part),
                f"{header_part}.{claims_part}".encode("ascii"),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except (ValueError, InvalidSignature, UnicodeError):
            return None
        if float(claims.get("exp", 0)) <= self._now():
            return None
        return claims

    def access_token(self, email: str, scopes: Sequence[str], lifetime: int = 3600) -> str:
        """An opaque OAuth access token, remembered so `access_token_info()` knows it."""
        token = "ya29.emu." + secrets.token_urlsafe(32)
        if self.max_access_lifetime is not None:
            lifetime = min(lifetime, self.max_access_lifetime)
        expires = datetime.datetime.fromtimestamp(self._now() + lifetime, _UTC)
        info = AccessTokenInfo(email=email, scopes=tuple(scopes), expires_at=expires)
        with self._lock:
            self._forget_expired()
            self._access[token] = info
        return token

    def expires_in(self, token: str) -> int:
        """Whole seconds until an access token minted here expires (0 if unknown)."""
        info = self.access_token_info(token)
        if info is None:
            return 0
        return max(0, round(info.expires_at.timestamp() - self._now()))

    def access_token_info(self, token: str) -> AccessTokenInfo | None:
        """Who an access token belongs to; None if unknown or expired."""
        with self._lock:
            info = self._access.get(token)
        if info is None or info.expires_at.timestamp() <= self._now():
            return None
        return info

    def _forget_expired(self) -> None:
        now = self._now()
        for token in [t for t, i in self._access.items() if i.expires_at.timestamp() <= now]:
            del self._access[token]

    def jwks(self) -> dict[str, Any]:
        """The public key as a JWK Set (served at GET /oauth2/v3/certs)."""
        numbers = self._key.public_key().public_numbers()
        return {
            "keys": [
                {
                    "kty": "RSA",
                    "alg": "RS256",
                    "use": "sig",
                    "kid": self.key_id,
                    "n": _b64url_uint(numbers.n),
                    "e": _b64url_uint(numbers.e),
                }
            ]
        }

    def pem_certs(self) -> dict[str, str]:
        """kid -> PEM certificate (served at GET /oauth2/v1/certs)."""
        return {self.key_id: self._cert_pem}


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64url_json(value: Mapping[str, Any]) -> str:
    return _b64url(json.dumps(value, separators=(",", ":")).encode())


def _b64url_uint(value: int) -> str:
    return _b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


@dataclass(frozen=True)
class FaultRule:
    """An injected fault: `rate` of the calls to `method` fail with `code`."""

    method: str
    code: grpc.StatusCode
    rate: float
    latency_seconds: float = 0.0


class FaultInjector:
    """Per-RPC error rates and added latency, deterministic under a seed.

    Rules for a method replace the "*" rules for it. Each served call draws one number
    from the seeded generator, so the same seed and the same call sequence fail the same
    calls.
    """

    def __init__(self, seed: int = 0) -> None:
        self._rng = random.Random(seed)  # noqa: S311 - reproducible draws, not secrets
        self._rules: dict[str, dict[grpc.StatusCode, FaultRule]] = {}
        self._lock = threading.Lock()

    def set(
        self, method: str, code: grpc.StatusCode, rate: float, latency_seconds: float = 0.0
    ) -> None:
        """Fail `rate` (0..1) of `method`'s calls with `code`; rate 0 removes the rule."""
        if not 0.0 <= rate <= 1.0:
            raise ValueError("rate must be within 0..1")
        if latency_seconds < 0:
            raise ValueError("latency must not be negative")
        with self._lock:
            rules = self._rules.setdefault(method, {})
            if rate == 0.0 and latency_seconds == 0.0:
                rules.pop(code, None)
                if not rules:
                    del self._rules[method]
            else:
                rules[code] = FaultRule(method, code, rate, latency_seconds)

    def seed(self, seed: int) -> None:
        """Restart the random sequence from `seed`."""
        with self._lock:
            self._rng = random.Random(seed)  # noqa: S311 - reproducible draws, not secrets

    def clear(self) -> None:
        """Remove every rule."""
        with self._lock:
            self._rules.clear()

    def rules(self) -> list[FaultRule]:
        """The rules in force."""
        with self._lock:
            return [rule for rules in self._rules.values() for rule in rules.values()]

    def decide(self, method: str) -> tuple[float, grpc.StatusCode | None]:
        """(latency, code to fail with or None) for one call of `method`."""
        with self._lock:
            rules = self._rules.get(method) or self._rules.get("*")
            if not rules:
                return 0.0, None
            draw = self._rng.random()
            latency = max(rule.latency_seconds for rule in rules.values())
            cumulative = 0.0
            for rule in rules.values():
                cumulative += rule.rate
                if draw < cumulative:
                    return latency, rule.code
            return latency, None

    async def apply(self, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        """Sleep the added latency, then abort the call with the fault's code if drawn."""
        latency, code = self.decide(method)
        if latency > 0:
            await asyncio.sleep(latency)
        if code is not None:
            await context.abort(code, f"injected fault: {code.name} for {method}")


@dataclass(frozen=True)
class CallRecord:
    """One RPC the emulator served."""

    service: str
    method: str
    code: grpc.StatusCode
    principal: str | None
    time: datetime.datetime = field(default_factory=lambda: datetime.datetime.now(_UTC))


class CallLog:
    """Every RPC the emulator served, for tests and benchmarks. Thread-safe."""

    def __init__(self) -> None:
        self._entries: list[CallRecord] = []
        self._lock = threading.Lock()

    def record(
        self, service: str, method: str, code: grpc.StatusCode, principal: str | None
    ) -> None:
        """Remember one served call and the code it ended with."""
        with self._lock:
            self._entries.append(CallRecord(service, method, code, principal))

    def count(self, method: str | None = None, service: str | None = None) -> int:
        """How many calls matched (all when no filter is given)."""
        with self._lock:
            return sum(
                1
                for entry in self._entries
                if (method is None or entry.method == method)
                and (service is None or entry.service == service)
            )

    def entries(self) -> list[CallRecord]:
        """A copy of the log, oldest first."""
        with self._lock:
            return list(self._entries)

    def clear(self) -> None:
        """Forget every call."""
        with self._lock:
            self._entries.clear()
