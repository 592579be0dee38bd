"""The emulator's shared machinery on its own: clock, token issuer, faults, call log.

Why: both service halves build on these; a clock that misses an advance, a token that
does not verify against the published keys, or a fault injector that is not
deterministic would make every test above them unreliable.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from google.auth import jwt as untyped_jwt

from gcpcall.emulator.core import CallLog, Clock, FaultInjector, TokenIssuer

jwt: Any = untyped_jwt  # google.auth.jwt has no type hints


def b64url_int(text: str) -> int:
    return int.from_bytes(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)), "big")


async def test_clock_sleep_wakes_early_when_advanced() -> None:
    clock = Clock()
    start = clock.now()
    sleeper = asyncio.ensure_future(clock.sleep(3600))
    await asyncio.sleep(0.01)
    assert not sleeper.done()

    clock.advance(1800)
    await asyncio.sleep(0.01)
    assert not sleeper.done()  # half-way: still sleeping
    clock.advance(1800)
    await asyncio.wait_for(sleeper, timeout=10)

    assert clock.now() - start >= datetime.timedelta(hours=1)
    assert clock.offset == 3600


async def test_clock_sleep_until_a_past_time_returns_at_once() -> None:
    clock = Clock()
    await asyncio.wait_for(clock.sleep_until(clock.now() - datetime.timedelta(days=1)), 10)
    await asyncio.wait_for(clock.sleep(0), 10)


async def test_clock_advance_from_another_thread_wakes_the_sleeper() -> None:
    clock = Clock()
    sleeper = asyncio.ensure_future(clock.sleep(600))
    await asyncio.sleep(0.01)
    await asyncio.to_thread(clock.advance, 601)
    await asyncio.wait_for(sleeper, timeout=10)


def test_clock_only_moves_forward() -> None:
    clock = Clock()
    with pytest.raises(ValueError, match="forward"):
        clock.advance(-1)
    assert clock.now().tzinfo is not None
    assert clock.now().utcoffset() == datetime.timedelta(0)


@pytest.fixture(scope="module")
def issuer() -> TokenIssuer:
    return TokenIssuer(issuer="https://issuer.example")


def test_id_token_verifies_against_the_pem_certs(issuer: TokenIssuer) -> None:
    token = issuer.id_token("sa@p.iam.gserviceaccount.com", "https://aud.example", lifetime=600)

    claims = jwt.decode(token, certs=issuer.pem_certs(), audience="https://aud.example")

    assert claims["iss"] == "https://issuer.example"
    assert claims["email"] == "sa@p.iam.gserviceaccount.com"
    assert claims["sub"].isdigit()
    assert claims["exp"] - claims["iat"] == 600
    assert jwt.decode_header(token)["kid"] == issuer.key_id
    assert issuer.verify_id_token(token) == claims


def test_id_token_verifies_against_the_jwks(issuer: TokenIssuer) -> None:
    token = issuer.id_token("sa@p.iam.gserviceaccount.com", "aud")
    (key,) = issuer.jwks()["keys"]
    assert (key["kid"], key["alg"], key["kty"]) == (issuer.key_id, "RS256", "RSA")
    public = rsa.RSAPublicNumbers(b64url_int(key["e"]), b64url_int(key["n"])).public_key()
    signing_input, _, signature = token.rpartition(".")

    public.verify(
        base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)),
        signing_input.encode(),
        padding.PKCS1v15(),
        hashes.SHA256(),
    )


def test_expired_and_tampered_id_tokens_are_refused(issuer: TokenIssuer) -> None:
    now = [1_000_000.0]
    clocked = TokenIssuer(now=lambda: now[0], key_size=1024)
    token = clocked.id_token("a@b", "aud", lifetime=60)
    assert clocked.verify_id_token(token) is not None
    now[0] += 61
    assert clocked.verify_id_token(token) is None
    header, claims, signature = issuer.id_token("a@b", "aud").split(".")
    payload = json.loads(base64.urlsafe_b64decode(claims + "=="))
    payload["aud"] = "other"
    forged = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    assert issuer.verify_id_token(f"{header}.{forged}.{signature}") is None
    assert issuer.verify_id_token("not.a.token") is None


def test_access_tokens_are_remembered_until_they_expire() -> None:
    now = [1_000_000.0]
    issuer = TokenIssuer(now=lambda: now[0], key_size=1024)
    token = issuer.access_token("sa@p", ["scope-a", "scope-b"], lifetime=100)

    info = issuer.access_token_info(token)
    assert info is not None
    assert (info.email, info.scopes) == ("sa@p", ("scope-a", "scope-b"))
    assert info.expires_at.timestamp() == 1_000_100.0
    assert issuer.access_token_info("ya29.unknown") is None
    assert token != issuer.access_token("sa@p", ["scope-a"])
    now[0] += 100
    assert issuer.access_token_info(token) is None


def test_faults_are_deterministic_under_a_seed() -> None:
    def draws(seed: int) -> list[grpc.StatusCode | None]:
        faults = FaultInjector(seed)
        faults.set("GetJob", grpc.StatusCode.UNAVAILABLE, 0.3)
        faults.set("GetJob", grpc.StatusCode.INTERNAL, 0.2)
        return [faults.decide("GetJob")[1] for _ in range(2000)]

    first = draws(42)
    assert first == draws(42)
    assert first != draws(43)
    assert 0.25 < first.count(grpc.StatusCode.UNAVAILABLE) / 2000 < 0.35
    assert 0.15 < first.count(grpc.StatusCode.INTERNAL) / 2000 < 0.25


def test_fault_rules_by_method_star_and_removal() -> None:
    faults = FaultInjector()
    faults.set("*", grpc.StatusCode.INTERNAL, 1.0)
    faults.set("GetJob", grpc.StatusCode.NOT_FOUND, 1.0, latency_seconds=0.5)

    assert faults.decide("GetJob") == (0.5, grpc.StatusCode.NOT_FOUND)
    assert faults.decide("CreateTask") == (0.0, grpc.StatusCode.INTERNAL)
    faults.set("GetJob", grpc.StatusCode.NOT_FOUND, 0.0)  # removes GetJob's rule
    assert faults.decide("GetJob") == (0.0, grpc.StatusCode.INTERNAL)
    faults.clear()
    assert faults.decide("GetJob") == (0.0, None)
    with pytest.raises(ValueError, match="rate"):
        faults.set("GetJob", grpc.StatusCode.INTERNAL, 1.5)


def test_call_log_counts_by_method_and_service() -> None:
    log = CallLog()
    log.record("scheduler", "GetJob", grpc.StatusCode.OK, None)
    log.record("scheduler", "GetJob", grpc.StatusCode.UNAVAILABLE, None)
    log.record("tasks", "CreateTask", grpc.StatusCode.OK, "sa@p")

    assert log.count() == 3
    assert log.count("GetJob") == 2
    assert log.count(service="tasks") == 1
    assert log.count("GetJob", service="tasks") == 0
    assert [entry.principal for entry in log.entries()] == [None, None, "sa@p"]
    log.clear()
    assert log.entries() == []
