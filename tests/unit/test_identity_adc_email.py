"""Operator mode: ADC yields the operator's own service account email (the default token
service account), read from google-auth's credentials as they really are.

Each credential is google-auth's own class, refreshed through a fake transport that answers
as Google's token endpoint and the GCE metadata server do: a key file gives its
client_email, the metadata server the email it reports (google-auth says "default" until a
refresh), impersonation its target; gcloud user credentials give none.
"""

from __future__ import annotations

import json
from typing import Any

import google.auth
import google.auth.transport.requests
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import compute_engine, impersonated_credentials
from google.auth import credentials as ga_credentials
from google.oauth2 import credentials as user_credentials
from google.oauth2 import service_account

from gcpcall.config import Endpoints
from gcpcall.gcp.identity_steps import CLOUD_PLATFORM, IdentitySteps, adc_email

KEY_EMAIL = "operator@p.iam.gserviceaccount.com"
GCE_EMAIL = "123-compute@developer.gserviceaccount.com"


class Answer:
    def __init__(self, status: int, body: Any, content_type: str = "application/json") -> None:
        self.status = status
        self.headers = {"content-type": content_type, "metadata-flavor": "Google"}
        self.data = (json.dumps(body) if not isinstance(body, str) else body).encode()


class FakeGoogle:
    """A google.auth.transport.Request: the token endpoint and the metadata server."""

    def __init__(self) -> None:
        self.urls: list[str] = []

    def __call__(self, url: str, method: str = "GET", body: Any = None,
                 headers: Any = None, timeout: Any = None, **_: Any) -> Answer:
        self.urls.append(url)
        if url.startswith("https://oauth2.example/token"):
            return Answer(200, {"access_token": "ya29.key", "expires_in": 3600,
                                "token_type": "Bearer"})
        if "/service-accounts/default/?recursive=true" in url:
            return Answer(200, {"email": GCE_EMAIL, "aliases": ["default"],
                                "scopes": [CLOUD_PLATFORM]})
        if "/service-accounts/default/token" in url:
            return Answer(200, {"access_token": "ya29.gce", "expires_in": 3599,
                                "token_type": "Bearer"})
        return Answer(404, "not found", "text/plain")


def key_file_credentials() -> service_account.Credentials:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    return service_account.Credentials.from_service_account_info(
        {"type": "service_account", "project_id": "p", "private_key_id": "k1",
         "private_key": pem, "client_email": KEY_EMAIL, "client_id": "1",
         "token_uri": "https://oauth2.example/token"},
        scopes=[CLOUD_PLATFORM],
    )


def test_key_file_gives_its_client_email() -> None:
    creds = key_file_credentials()
    creds.refresh(FakeGoogle())
    assert creds.token == "ya29.key"
    assert adc_email(creds) == KEY_EMAIL


def test_metadata_server_gives_the_email_it_reports_after_a_refresh() -> None:
    creds = compute_engine.Credentials()
    assert adc_email(creds) is None  # google-auth's placeholder "default" is no email
    creds.refresh(FakeGoogle())
    assert creds.token == "ya29.gce"
    assert adc_email(creds) == GCE_EMAIL


def test_impersonation_gives_its_target() -> None:
    creds = impersonated_credentials.Credentials(
        source_credentials=key_file_credentials(),
        target_principal="target@p.iam.gserviceaccount.com", target_scopes=[CLOUD_PLATFORM])
    assert adc_email(creds) == "target@p.iam.gserviceaccount.com"


def test_user_credentials_give_none() -> None:
    creds = user_credentials.Credentials(token="ya29.user", account="someone@example.com")
    assert adc_email(creds) is None
    assert adc_email(ga_credentials.AnonymousCredentials()) is None


@pytest.mark.parametrize(("make", "email", "token"), [
    (key_file_credentials, KEY_EMAIL, "ya29.key"),
    (compute_engine.Credentials, GCE_EMAIL, "ya29.gce"),
])
async def test_adc_token_carries_the_email(
    monkeypatch: pytest.MonkeyPatch, make: Any, email: str, token: str
) -> None:
    fake = FakeGoogle()
    creds = make()
    monkeypatch.setattr(google.auth, "default", lambda scopes=None, **_: (creds, "p"))
    monkeypatch.setattr(google.auth.transport.requests, "Request", lambda: fake)
    steps = IdentitySteps(Endpoints())
    try:
        got = await steps.adc_token([CLOUD_PLATFORM])
    finally:
        await steps.close()
    assert (got.value, got.email) == (token, email)
