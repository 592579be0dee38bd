"""The Operator mode's last resort: google-auth's Application Default Credentials.

Without a metadata host and outside an emulator, the operator's own credentials are whatever
google-auth finds (here a service account key file whose token endpoint is a local server),
refreshed in a worker thread; a missing ADC is IdentityNotReady at step "ADC".
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gcpcall.config import Endpoints, IdentityMode, Settings
from gcpcall.gcp.identity import IdentityNotReady, IdentityResolver
from gcpcall.kube import Connection, KubeClient

EMAIL = "operator@p.iam.gserviceaccount.com"


@pytest.fixture
async def oauth_server() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    grants: list[dict[str, str]] = []

    async def token(request: web.Request) -> web.Response:
        form = await request.post()
        grants.append({k: str(v) for k, v in form.items()})
        return web.json_response(
            {"access_token": f"adc-token-{len(grants)}", "expires_in": 3600, "token_type": "Bearer"}
        )

    app = web.Application()
    app.router.add_post("/token", token)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = next(a for a in runner.addresses if isinstance(a, tuple))[1]
    yield f"http://127.0.0.1:{port}/token", grants
    await runner.cleanup()


def operator_resolver() -> IdentityResolver:
    settings = Settings(identity_mode=IdentityMode.OPERATOR, endpoints=Endpoints())
    return IdentityResolver(settings, KubeClient(Connection(server="https://unused.invalid")))


async def test_operator_mode_uses_application_default_credentials(
    oauth_server: tuple[str, list[dict[str, str]]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token_uri, grants = oauth_server
    adc = tmp_path / "adc.json"
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    adc.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "p",
                "private_key_id": "k1",
                "private_key": pem,
                "client_email": EMAIL,
                "client_id": "1",
                "token_uri": token_uri,
            }
        )
    )
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(adc))
    resolver = operator_resolver()
    try:
        first = await resolver.resolve("ns", None)
        second = await resolver.resolve("other", "ksa")
    finally:
        await resolver.close()
    assert first.access_token == "adc-token-1"
    assert first.email == EMAIL
    assert second.access_token == first.access_token  # cached
    assert [g["grant_type"] for g in grants] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]


async def test_missing_application_default_credentials_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "absent.json"))
    resolver = operator_resolver()
    try:
        with pytest.raises(IdentityNotReady) as info:
            await resolver.resolve("ns", None)
    finally:
        await resolver.close()
    assert info.value.step == "ADC"
    assert "absent.json" in info.value.message
