"""The emulator's identity services against Google's own client library, google-auth.

STS (identity_pool credentials with a subject-token supplier), IAM Credentials
(impersonated credentials, with and without a delegation chain), generateIdToken, the
metadata server (compute_engine credentials, in a subprocess so GCE_METADATA_HOST is read
as google-auth reads it: at import). The cluster issuer here is a small OIDC issuer of the
test's own; the real API server's issuer is used in tests/integration/test_identity_*.py.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import google.auth.exceptions
import google.auth.jwt
import google.auth.transport.requests
import google.oauth2.credentials
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from google.auth import identity_pool, impersonated_credentials

from gcpcall.emulator.core import TokenIssuer
from gcpcall.emulator.iam import members_of
from gcpcall.emulator.identity_services import IdentityServices
from gcpcall.emulator.sts import WorkloadIdentityTrust

CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
POOL = "emu-project.svc.id.goog"
CLUSTER_URL = "https://container.googleapis.com/v1/projects/emu-project/locations/l/clusters/c"
STS_AUDIENCE = f"identitynamespace:{POOL}:{CLUSTER_URL}"
TARGET = "target@emu-project.iam.gserviceaccount.com"
CALLER = "caller@emu-project.iam.gserviceaccount.com"
D1 = "d1@emu-project.iam.gserviceaccount.com"
D2 = "d2@emu-project.iam.gserviceaccount.com"

# google-auth has no type hints: its entry points are used through Any
_Impersonated: Any = impersonated_credentials.Credentials
_IdentityPool: Any = identity_pool.Credentials
_UserCredentials: Any = google.oauth2.credentials.Credentials
_Request: Any = google.auth.transport.requests.Request
_jwt_decode: Any = google.auth.jwt.decode


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class ClusterIssuer:
    """A Kubernetes-like ServiceAccount issuer: OIDC discovery, JWKS, signed KSA tokens."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "cluster-key"
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()

        async def discovery(request: web.Request) -> web.Response:
            return web.json_response({"issuer": self.url, "jwks_uri": f"{self.url}/openid/v1/jwks"})

        async def jwks(request: web.Request) -> web.Response:
            numbers = self.key.public_key().public_numbers()
            n = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")
            e = numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")
            key = {
                "kty": "RSA",
                "alg": "RS256",
                "use": "sig",
                "kid": self.kid,
                "n": _b64(n),
                "e": _b64(e),
            }
            return web.json_response({"keys": [key]})

        app.router.add_get("/.well-known/openid-configuration", discovery)
        app.router.add_get("/openid/v1/jwks", jwks)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = next(a for a in self._runner.addresses if isinstance(a, tuple))[1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def token(
        self,
        namespace: str,
        name: str,
        *,
        audience: str = POOL,
        lifetime: float = 600,
        issuer: str | None = None,
        key: rsa.RSAPrivateKey | None = None,
        subject: str | None = None,
    ) -> str:
        now = int(time.time())
        header = {"alg": "RS256", "kid": self.kid}
        claims = {
            "aud": [audience],
            "exp": int(now + lifetime),
            "iat": now,
            "nbf": now,
            "iss": issuer or self.url,
            "sub": subject or f"system:serviceaccount:{namespace}:{name}",
            "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": name}},
        }
        signing_input = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())
        signature = (key or self.key).sign(
            signing_input.encode(), padding.PKCS1v15(), hashes.SHA256()
        )
        return signing_input + "." + _b64(signature)


@pytest.fixture
async def cluster() -> AsyncIterator[ClusterIssuer]:
    issuer = ClusterIssuer()
    await issuer.start()
    yield issuer
    await issuer.stop()


@pytest.fixture(scope="module")
def issuer() -> TokenIssuer:
    return TokenIssuer()


@pytest.fixture
async def services(issuer: TokenIssuer, cluster: ClusterIssuer) -> AsyncIterator[IdentityServices]:
    svc = IdentityServices(issuer)
    await svc.serve()
    svc.sts.trust(WorkloadIdentityTrust.gke(pool=POOL, cluster_url=CLUSTER_URL, issuer=cluster.url))
    yield svc
    await svc.close()


def gat_url(services: IdentityServices, email: str) -> str:
    return f"{services.url}/v1/projects/-/serviceAccounts/{email}:generateAccessToken"


async def post_json(url: str, body: Any, token: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, json=body, headers=headers) as response,
    ):
        return response.status, await response.json(content_type=None)


# --- IAM Credentials ---------------------------------------------------------------------


def _impersonate(
    services: IdentityServices, source: str, target: str, delegates: list[str] | None = None
) -> str:
    credentials = _Impersonated(
        source_credentials=_UserCredentials(source),
        target_principal=target,
        target_scopes=[CLOUD_PLATFORM],
        delegates=delegates,
        lifetime=600,
        iam_endpoint_override=gat_url(services, target),
    )
    credentials.refresh(_Request())
    return str(credentials.token)


async def test_generate_access_token_with_google_auth(
    services: IdentityServices, issuer: TokenIssuer
) -> None:
    services.iam.policy.grant(f"serviceAccount:{CALLER}", TARGET)
    source = issuer.access_token(CALLER, [CLOUD_PLATFORM])
    token = await asyncio.to_thread(_impersonate, services, source, TARGET)
    info = issuer.access_token_info(token)
    assert info is not None
    assert info.email == TARGET
    assert info.scopes == (CLOUD_PLATFORM,)
    assert info.expires_at.timestamp() - time.time() == pytest.approx(600, abs=30)
    [call] = services.iam.calls()
    assert (call.method, call.caller, call.target, call.status) == (
        "GenerateAccessToken",
        CALLER,
        TARGET,
        200,
    )


async def test_delegation_chain_of_two(services: IdentityServices, issuer: TokenIssuer) -> None:
    policy = services.iam.policy
    policy.grant(CALLER, D1)
    policy.grant(D1, D2)
    policy.grant(D2, TARGET)
    source = issuer.access_token(CALLER, [CLOUD_PLATFORM])
    token = await asyncio.to_thread(_impersonate, services, source, TARGET, [D1, D2])
    info = issuer.access_token_info(token)
    assert info is not None
    assert info.email == TARGET
    # google-auth sends the emails as given; the operator sends projects/-/serviceAccounts/...
    assert [d.rsplit("/", 1)[-1] for d in services.iam.calls()[-1].delegates] == [D1, D2]
    policy.revoke(D1, D2)  # a broken link anywhere in the chain refuses the whole chain
    with pytest.raises(google.auth.exceptions.RefreshError, match="PERMISSION_DENIED"):
        await asyncio.to_thread(_impersonate, services, source, TARGET, [D1, D2])
    # without the chain the caller holds no grant on the target itself
    with pytest.raises(google.auth.exceptions.RefreshError, match="getAccessToken"):
        await asyncio.to_thread(_impersonate, services, source, TARGET)


async def test_permission_denied_has_googles_error_shape(
    services: IdentityServices, issuer: TokenIssuer
) -> None:
    source = issuer.access_token(CALLER, [CLOUD_PLATFORM])
    status, body = await post_json(gat_url(services, TARGET), {"scope": [CLOUD_PLATFORM]}, source)
    assert status == 403
    error = body["error"]
    assert error["code"] == 403
    assert error["status"] == "PERMISSION_DENIED"
    assert error["message"] == (
        "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist)."
    )
    assert error["details"][0]["reason"] == "IAM_PERMISSION_DENIED"


async def test_unauthenticated_and_revoked_callers(
    services: IdentityServices, issuer: TokenIssuer
) -> None:
    services.iam.policy.grant(CALLER, TARGET)
    status, body = await post_json(gat_url(services, TARGET), {"scope": [CLOUD_PLATFORM]})
    assert (status, body["error"]["status"]) == (401, "UNAUTHENTICATED")
    source = issuer.access_token(CALLER, [CLOUD_PLATFORM])
    status, _ = await post_json(gat_url(services, TARGET), {"scope": [CLOUD_PLATFORM]}, source)
    assert status == 200
    services.iam.revoke_token(source)
    status, body = await post_json(gat_url(services, TARGET), {"scope": [CLOUD_PLATFORM]}, source)
    assert (status, body["error"]["status"]) == (401, "UNAUTHENTICATED")
    assert services.iam.authenticate(f"Bearer {source}") is None


async def test_scopes_and_lifetime_are_checked(
    services: IdentityServices, issuer: TokenIssuer
) -> None:
    services.iam.policy.grant(CALLER, TARGET)
    source = issuer.access_token(CALLER, [CLOUD_PLATFORM])
    url = gat_url(services, TARGET)
    status, body = await post_json(url, {"scope": []}, source)
    assert (status, body["error"]["status"]) == (400, "INVALID_ARGUMENT")
    status, _ = await post_json(url, {"scope": [CLOUD_PLATFORM], "lifetime": "7200s"}, source)
    assert status == 400
    narrow = issuer.access_token(CALLER, ["https://www.googleapis.com/auth/cloud-tasks"])
    status, body = await post_json(url, {"scope": [CLOUD_PLATFORM]}, narrow)
    assert (status, body["error"]["message"]) == (
        403,
        "Request had insufficient authentication scopes.",
    )


async def test_generate_id_token_verifies_with_google_auth(
    services: IdentityServices, issuer: TokenIssuer
) -> None:
    services.iam.policy.grant(CALLER, TARGET)
    source = issuer.access_token(CALLER, [CLOUD_PLATFORM])
    url = f"{services.url}/v1/projects/-/serviceAccounts/{TARGET}:generateIdToken"
    status, body = await post_json(
        url, {"audience": "https://relay.example", "includeEmail": True}, source
    )
    assert status == 200
    claims = _jwt_decode(body["token"], certs=issuer.pem_certs(), audience="https://relay.example")
    assert claims["email"] == TARGET
    other = issuer.access_token(D1, [CLOUD_PLATFORM])
    status, body = await post_json(url, {"audience": "https://relay.example"}, other)
    assert status == 403
    assert "getOpenIdToken" in body["error"]["message"]


async def test_policy_admin_routes(services: IdentityServices) -> None:
    base = f"{services.url}/emulator/v1/iam"
    async with aiohttp.ClientSession() as session:
        async with session.put(f"{base}/policy", json={"grants": {CALLER: [TARGET]}}) as response:
            assert response.status == 200
            assert (await response.json())["grants"] == {f"serviceAccount:{CALLER}": [TARGET]}
        async with session.post(
            f"{base}/policy:grant", json={"member": D1, "serviceAccount": D2}
        ) as response:
            assert (await response.json())["grants"][f"serviceAccount:{D1}"] == [D2]
        async with session.post(
            f"{base}/policy:revoke", json={"member": CALLER, "serviceAccount": TARGET}
        ) as response:
            assert f"serviceAccount:{CALLER}" not in (await response.json())["grants"]
        async with session.get(f"{base}/policy") as response:
            doc = await response.json()
            assert doc == {"enforce": True, "grants": {f"serviceAccount:{D1}": [D2]}}
        async with session.post(f"{base}/policy:grant", json={"member": 1}) as response:
            assert response.status == 400
    assert services.iam.may_act_as(D1, D2)
    assert not services.iam.may_act_as(CALLER, TARGET)


def test_members_of_a_federated_principal() -> None:
    principal = (
        "principal://iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/"
        f"{POOL}/subject/ns/team-a/sa/runner"
    )
    assert members_of(principal) == {principal, f"serviceAccount:{POOL}[team-a/runner]"}
    assert members_of(TARGET) == {f"serviceAccount:{TARGET}"}


# --- STS -------------------------------------------------------------------------------------


class _Supplier(identity_pool.SubjectTokenSupplier):
    def __init__(self, token: str) -> None:
        self.token = token

    def get_subject_token(self, context: Any, request: Any) -> str:
        return self.token


def _federate(services: IdentityServices, subject: str, impersonate: str | None) -> str:
    credentials = _IdentityPool(
        audience=STS_AUDIENCE,
        subject_token_type="urn:ietf:params:oauth:token-type:jwt",
        token_url=f"{services.url}/v1/token",
        subject_token_supplier=_Supplier(subject),
        service_account_impersonation_url=gat_url(services, impersonate) if impersonate else None,
        scopes=[CLOUD_PLATFORM],
    )
    credentials.refresh(_Request())
    return str(credentials.token)


async def test_sts_with_google_auth_identity_pool(
    services: IdentityServices, issuer: TokenIssuer, cluster: ClusterIssuer
) -> None:
    subject = cluster.token("team-a", "runner")
    token = await asyncio.to_thread(_federate, services, subject, None)
    info = issuer.access_token_info(token)
    assert info is not None
    principal = info.email
    assert principal == (
        "principal://iam.googleapis.com/projects/123456789012/locations/global/"
        f"workloadIdentityPools/{POOL}/subject/ns/team-a/sa/runner"
    )
    [exchange] = services.sts.exchanges()
    assert (exchange.audience, exchange.principal, exchange.status) == (
        STS_AUDIENCE,
        principal,
        200,
    )
    # then generateAccessToken, as google-auth chains it: needs workloadIdentityUser
    with pytest.raises(google.auth.exceptions.RefreshError, match="PERMISSION_DENIED"):
        await asyncio.to_thread(_federate, services, subject, TARGET)
    services.iam.policy.grant(f"serviceAccount:{POOL}[team-a/runner]", TARGET)
    token = await asyncio.to_thread(_federate, services, subject, TARGET)
    info = issuer.access_token_info(token)
    assert info is not None
    assert info.email == TARGET
    # another namespace's KSA of the same name is a different principal
    other = cluster.token("team-b", "runner")
    with pytest.raises(google.auth.exceptions.RefreshError, match="PERMISSION_DENIED"):
        await asyncio.to_thread(_federate, services, other, TARGET)


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("wrong-audience", "does not match the expected audience"),
        ("expired", "expired"),
        ("wrong-issuer", "does not match the expected"),
        ("forged", "Invalid ID Token signature"),
        ("not-a-ksa", "is not a ServiceAccount"),
        ("garbage", "Unable to parse"),
    ],
)
async def test_sts_refuses_bad_subject_tokens(
    services: IdentityServices, cluster: ClusterIssuer, case: str, error: str
) -> None:
    tokens: dict[str, Callable[[], str]] = {
        "wrong-audience": lambda: cluster.token("ns", "ksa", audience="someone-else"),
        "expired": lambda: cluster.token("ns", "ksa", lifetime=-120),
        "wrong-issuer": lambda: cluster.token("ns", "ksa", issuer="https://evil.example"),
        "forged": lambda: cluster.token(
            "ns", "ksa", key=rsa.generate_private_key(public_exponent=65537, key_size=2048)
        ),
        "not-a-ksa": lambda: cluster.token("ns", "ksa", subject="system:node:n1"),
        "garbage": lambda: "not-a-jwt",
    }
    form = {
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
        "audience": STS_AUDIENCE,
        "scope": CLOUD_PLATFORM,
        "requested_token_type": "urn:ietf:params:oauth:token-type:access_token",
        "subject_token": tokens[case](),
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{services.url}/v1/token", data=form) as response,
    ):
        body = await response.json()
    assert response.status == 400
    assert body["error"] == "invalid_grant"
    assert error in body["error_description"]
    assert services.sts.exchanges()[-1].status == 400


async def test_sts_refuses_an_unknown_audience(
    services: IdentityServices, cluster: ClusterIssuer
) -> None:
    form = {
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
        "audience": f"identitynamespace:{POOL}:https://other-cluster",
        "subject_token": cluster.token("ns", "ksa"),
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{services.url}/v1/token", json=form) as response,
    ):
        body = await response.json()
    assert (response.status, body["error"]) == (400, "invalid_target")


async def test_sts_trust_admin_routes(services: IdentityServices, cluster: ClusterIssuer) -> None:
    base = f"{services.url}/emulator/v1/sts"
    provider = (
        "//iam.googleapis.com/projects/9/locations/global/workloadIdentityPools/x/providers/k"
    )
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{base}/trusts",
            json={
                "audience": provider,
                "issuer": cluster.url,
                "pool": "x",
                "projectNumber": "9",
                "tokenAudiences": [provider],
            },
        ) as response:
            assert response.status == 200
        async with session.get(f"{base}/trusts") as response:
            audiences = {t["audience"] for t in (await response.json())["trusts"]}
        assert audiences == {STS_AUDIENCE, provider}
        form = {
            "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
            "audience": provider,
            "subject_token": cluster.token("ns", "ksa", audience=provider),
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        }
        async with session.post(f"{services.url}/v1/token", data=form) as response:
            assert response.status == 200
            assert (await response.json())["token_type"] == "Bearer"
        async with session.delete(f"{base}/trusts", params={"audience": provider}) as response:
            assert response.status == 200
        async with session.post(f"{services.url}/v1/token", data=form) as response:
            assert response.status == 400
        async with session.get(f"{base}/exchanges") as response:
            statuses = [e["status"] for e in (await response.json())["exchanges"]]
        assert statuses == [200, 400]


# --- metadata server -----------------------------------------------------------------------

_COMPUTE_CREDENTIALS = """
import json, sys
import google.auth.transport.requests
from google.auth import compute_engine
from google.auth.compute_engine import _metadata
request = google.auth.transport.requests.Request()
credentials = compute_engine.Credentials()
credentials.refresh(request)
print(json.dumps({
    "email": credentials.service_account_email,
    "token": credentials.token,
    "project": _metadata.get_project_id(request),
    "on_gce": _metadata.ping(request),
}))
"""


async def test_metadata_server_serves_google_auth_compute_credentials(
    services: IdentityServices, issuer: TokenIssuer
) -> None:
    host = services.url.removeprefix("http://")
    env = {**os.environ, "GCE_METADATA_HOST": host, "GCE_METADATA_IP": host}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _COMPUTE_CREDENTIALS,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    doc = json.loads(out)
    assert doc["email"] == services.metadata.email
    assert doc["project"] == services.metadata.project_id
    assert doc["on_gce"] is True
    info = issuer.access_token_info(doc["token"])
    assert info is not None
    assert info.email == services.metadata.email
    assert services.metadata.token_requests == 1


async def test_metadata_server_requires_the_flavor_header(services: IdentityServices) -> None:
    url = f"{services.url}/computeMetadata/v1/instance/service-accounts/default/token"
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as response:
            assert response.status == 403
        flavor = {"Metadata-Flavor": "Google"}
        async with session.get(url, headers={**flavor, "X-Forwarded-For": "1.2.3.4"}) as response:
            assert response.status == 403
        async with session.get(url, headers=flavor, params={"scopes": CLOUD_PLATFORM}) as response:
            assert response.status == 200
            assert response.headers["Metadata-Flavor"] == "Google"
            body = await response.json()
            assert body["token_type"] == "Bearer"
            assert body["expires_in"] == 3600
        other = url.replace("/default/", "/nobody@x.iam.gserviceaccount.com/")
        async with session.get(other, headers=flavor) as response:
            assert response.status == 404
        identity = url.replace("/token", "/identity")
        async with session.get(identity, headers=flavor, params={"audience": "aud"}) as response:
            assert response.status == 200
            claims = _jwt_decode(
                await response.text(), certs=services.tokens.pem_certs(), audience="aud"
            )
            assert claims["email"] == services.metadata.email
        async with session.put(
            f"{services.url}/emulator/v1/metadata", json={"email": "op2@p.iam.gserviceaccount.com"}
        ) as response:
            assert (await response.json())["email"] == "op2@p.iam.gserviceaccount.com"
        async with session.get(url.replace("/token", "/email"), headers=flavor) as response:
            assert await response.text() == "op2@p.iam.gserviceaccount.com"


async def test_other_services_authenticate_grpc_callers(
    services: IdentityServices, issuer: TokenIssuer
) -> None:
    """What the Scheduler/Tasks emulators call per admin RPC: who is it, may it actAs."""
    token = issuer.access_token(CALLER, [CLOUD_PLATFORM])
    metadata = (("x-goog-api-client", "gl-python"), ("authorization", f"Bearer {token}"))
    caller = services.iam.caller_from_metadata(metadata)
    assert caller is not None
    assert caller.principal == CALLER
    assert services.iam.caller_from_metadata((("authorization", b"Bearer nope"),)) is None
    assert services.iam.caller_from_metadata(None) is None
    assert services.iam.may_act_as(caller, CALLER)  # itself
    assert not services.iam.may_act_as(caller, TARGET)
    services.iam.policy.grant(f"serviceAccount:{CALLER}", TARGET)
    assert services.iam.may_act_as(caller, TARGET)
    services.iam.policy.enforce = False
    assert services.iam.may_act_as(caller, D1)


async def test_token_lifetime_cap_is_what_google_auth_reads(cluster: ClusterIssuer) -> None:
    """`--token-lifetime 120`: STS, generateAccessToken (asked for 3600 s) and the metadata
    server all issue 120 s tokens, and say so in `expires_in` / `expireTime`."""
    issuer = TokenIssuer(max_access_lifetime=120)
    services = IdentityServices(issuer)
    await services.serve()
    try:
        services.sts.trust(
            WorkloadIdentityTrust.gke(pool=POOL, cluster_url=CLUSTER_URL, issuer=cluster.url))
        services.iam.policy.grant(f"serviceAccount:{POOL}[team-a/runner]", TARGET)

        def federate(impersonate: str | None) -> Any:
            credentials = _IdentityPool(
                audience=STS_AUDIENCE,
                subject_token_type="urn:ietf:params:oauth:token-type:jwt",
                token_url=f"{services.url}/v1/token",
                subject_token_supplier=_Supplier(cluster.token("team-a", "runner")),
                service_account_impersonation_url=(
                    gat_url(services, impersonate) if impersonate else None),
                service_account_impersonation_options={"token_lifetime_seconds": 3600},
                scopes=[CLOUD_PLATFORM],
            )
            credentials.refresh(_Request())
            return credentials

        for impersonate in (None, TARGET):
            credentials = await asyncio.to_thread(federate, impersonate)
            left = credentials.expiry.timestamp() - datetime.datetime.now(
                datetime.UTC).replace(tzinfo=None).timestamp()
            assert left == pytest.approx(120, abs=5), impersonate
            info = issuer.access_token_info(credentials.token)
            assert info is not None
            assert info.expires_at.timestamp() - time.time() == pytest.approx(120, abs=5)
        url = f"{services.url}/computeMetadata/v1/instance/service-accounts/default/token"
        async with (
            aiohttp.ClientSession() as session,
            session.get(url, headers={"Metadata-Flavor": "Google"}) as response,
        ):
            doc = await response.json()
        assert doc["expires_in"] in (119, 120)
        assert issuer.expires_in("ya29.never-issued") == 0
    finally:
        await services.close()
