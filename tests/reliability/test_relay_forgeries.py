"""R6 (targets.md) at CI size: 200 concurrent requests to the relay, forgeries mixed in.

Forged signatures, expired tokens, tokens for another audience and tokens for another
account arrive together with genuine Cloud Scheduler-style requests (a valid ID token for
the objects' account, a distinct X-CloudScheduler-ScheduleTime each). Every forgery must
be refused with 401/403 and call nothing; every genuine request must be called once and
recorded as its own run, once. `python -m bench relay-forgeries` runs it at full size.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import random
import urllib.request
from typing import Any

import aiohttp
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.integration.conftest import Objects, wait_for
from tests.integration.test_relay import (
    INTRUDER,
    OPERATOR_GSA,
    RELAY_URL,
    RelayWorld,
    ready,
    relay,
    relayed,
)

__all__ = ["relay"]

OBJECTS = 10
GENUINE_PER_OBJECT = 10
FORGERIES = 100  # of each: 25 forged, 25 expired, 25 wrong audience, 25 wrong account


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(email: str, kid: str) -> str:
    """Claims as Google would write them, signed with a key that is not Google's."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(datetime.datetime.now(datetime.UTC).timestamp())
    header = _b64(json.dumps({"alg": "RS256", "typ": "JWT", "kid": kid}).encode())
    claims = _b64(json.dumps({"iss": "https://accounts.google.com", "aud": RELAY_URL,
                              "email": email, "email_verified": True, "sub": "1",
                              "iat": now, "exp": now + 3600}).encode())
    signature = key.sign(f"{header}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{header}.{claims}.{_b64(signature)}"


def minted(world: RelayWorld, **doc: Any) -> str:
    return str(world.emulator.admin("POST", "/tokens/id", doc)["token"])


async def _send(session: aiohttp.ClientSession, world: RelayWorld, token: str, body: bytes,
                schedule_time: str) -> int:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json",
               "X-CloudScheduler": "true", "X-CloudScheduler-ScheduleTime": schedule_time}
    async with session.post(f"http://127.0.0.1:{world.port}/relay/v1", data=body,
                            headers=headers) as resp:
        await resp.read()
        return resp.status


def test_forgeries_are_refused_and_every_genuine_call_is_made_and_recorded_once(
    relay: RelayWorld, sgc: Objects
) -> None:
    world, ns = relay, relay.namespace
    envelopes: dict[str, bytes] = {}
    for i in range(OBJECTS):
        name = f"r6-{i}"
        sgc.create(ns, relayed(name, f"/r6/{ns}/{name}", historyLimit=50))
    for i in range(OBJECTS):
        name = f"r6-{i}"
        uid = ready(sgc, ns, name)["metadata"]["uid"]
        envelopes[name] = json.dumps({"apiVersion": "gcpcall.dev/v1alpha1",
                                      "kind": "ScheduledGcpCall", "namespace": ns,
                                      "name": name, "uid": uid}).encode()
    with urllib.request.urlopen(f"{world.emulator.http_url}/oauth2/v1/certs") as resp:
        kid = next(iter(json.loads(resp.read())))
    genuine = world.id_token(OPERATOR_GSA)
    bad_tokens = (
        [forged(OPERATOR_GSA, kid) for _ in range(FORGERIES // 4)]
        + [minted(world, email=OPERATOR_GSA, audience=RELAY_URL, lifetime_seconds=600,
                  issued_seconds_ago=7200)] * (FORGERIES // 4)
        + [world.id_token(OPERATOR_GSA, "https://elsewhere.example/")] * (FORGERIES // 4)
        + [world.id_token(INTRUDER)] * (FORGERIES // 4))
    base = datetime.datetime(2026, 6, 1, 9, 0, tzinfo=datetime.UTC)
    requests: list[tuple[str, str, bytes, str]] = []  # (kind, token, body, schedule time)
    for i, name in enumerate(envelopes):
        for n in range(GENUINE_PER_OBJECT):
            when = (base + datetime.timedelta(minutes=i * 100 + n)).strftime("%Y-%m-%dT%H:%M:%SZ")
            requests.append(("genuine", genuine, envelopes[name], when))
    names = list(envelopes)
    for j, token in enumerate(bad_tokens):
        when = (base - datetime.timedelta(minutes=j + 1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        requests.append(("forged", token, envelopes[names[j % OBJECTS]], when))
    random.Random(6).shuffle(requests)

    async def all_at_once() -> list[int]:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as session:
            return await asyncio.gather(*(_send(session, world, t, b, w)
                                          for _, t, b, w in requests))

    answers = asyncio.run(all_at_once())
    by_kind: dict[str, list[int]] = {"genuine": [], "forged": []}
    for (kind, *_), status in zip(requests, answers, strict=True):
        by_kind[kind].append(status)
    assert len(requests) == OBJECTS * GENUINE_PER_OBJECT + FORGERIES == 200
    assert set(by_kind["forged"]) <= {401, 403}
    assert by_kind["forged"].count(401) == 3 * FORGERIES // 4  # forged, expired, audience
    assert by_kind["genuine"] == [200] * OBJECTS * GENUINE_PER_OBJECT
    for name in names:
        assert len(world.target.received(f"/r6/{ns}/{name}")) == GENUINE_PER_OBJECT
        runs = wait_for(lambda n=name: len(((sgc.get(ns, n) or {}).get("status") or {})
                                           .get("runs") or []) == GENUINE_PER_OBJECT
                        and (sgc.get(ns, n) or {})["status"]["runs"], what=f"{name}'s runs")
        assert len({r["scheduleTime"] for r in runs}) == GENUINE_PER_OBJECT
        assert all(r["attempts"] == 1 and r["result"] == "Succeeded" for r in runs)
        assert not [r for r in runs if r["scheduleTime"] < base.strftime("%Y-%m-%dT%H:%M:%SZ")]
