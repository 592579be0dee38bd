"""The identity chain end to end: the real API server, the emulator's STS / IAM Credentials /
metadata server, and the operator's IdentityResolver with the real KubeClient.

Each test gets fresh identity services (policy, counters) on 127.0.0.1 and a clock shared by
the resolver and the token issuer, so expiry is tested by moving time, not waiting for it.
The STS verifies the KSA tokens against the API server's own issuer discovery and JWKS.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from kubernetes import client as k8s_client
from prometheus_client import REGISTRY
from tests.conftest import ensure_service_account, service_account_token

from gcpcall.config import Endpoints, IdentityMode, Settings
from gcpcall.emulator.core import TokenIssuer
from gcpcall.emulator.identity_services import IdentityServices
from gcpcall.emulator.sts import WorkloadIdentityTrust
from gcpcall.gcp.identity import ANNOTATION, IdentityNotReady, IdentityResolver
from gcpcall.kube import Connection, KubeClient, load_connection

if TYPE_CHECKING:
    from tests.conftest import ControlPlane

POOL = "itest-project.svc.id.goog"
CLUSTER_URL = "https://container.googleapis.com/v1/projects/itest-project/locations/l/clusters/c"
OPERATOR_GSA = "gcpcall-operator@itest-project.iam.gserviceaccount.com"
D1 = "delegate-1@itest-project.iam.gserviceaccount.com"
D2 = "delegate-2@itest-project.iam.gserviceaccount.com"
TOKENISH = re.compile(r"ya29\.|eyJ[A-Za-z0-9_-]{8,}")


def gsa(name: str) -> str:
    return f"{name}@itest-project.iam.gserviceaccount.com"


def wi_member(namespace: str, ksa: str) -> str:
    return f"serviceAccount:{POOL}[{namespace}/{ksa}]"


class FakeClock:
    """Real time plus an offset the test moves; shared by the resolver and the issuer."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@dataclass
class IdentityEnv:
    controlplane: ControlPlane
    services: IdentityServices
    issuer: TokenIssuer
    clock: FakeClock
    kube: KubeClient
    resolvers: list[IdentityResolver] = field(default_factory=list)

    def settings(self, mode: IdentityMode, **overrides: Any) -> Settings:
        url = self.services.url
        endpoints = Endpoints(
            sts=f"{url}/v1/token",
            iam_credentials=url,
            metadata_host=url.removeprefix("http://"),
        )
        base: dict[str, Any] = {
            "identity_mode": mode,
            "workload_pool": POOL,
            "cluster_url": CLUSTER_URL,
            "endpoints": endpoints,
        }
        return Settings(**{**base, **overrides})

    def resolver(
        self, mode: IdentityMode, *, kube: KubeClient | None = None, **overrides: Any
    ) -> IdentityResolver:
        resolver = IdentityResolver(
            self.settings(mode, **overrides), kube or self.kube, clock=self.clock, failure_ttl=0
        )
        self.resolvers.append(resolver)
        return resolver

    def principal(self, namespace: str, ksa: str) -> str:
        return (
            "principal://iam.googleapis.com/projects/123456789012/locations/global/"
            f"workloadIdentityPools/{POOL}/subject/ns/{namespace}/sa/{ksa}"
        )

    def holder(self, token: str | None) -> str | None:
        """Whom the emulator's services see behind a token (None: refused)."""
        caller = self.services.iam.caller(token)
        return caller.principal if caller else None


@pytest.fixture
async def env(controlplane: ControlPlane) -> AsyncIterator[IdentityEnv]:
    clock = FakeClock()
    issuer = TokenIssuer(now=clock)
    services = IdentityServices(issuer)
    await services.serve()
    services.sts.trust(
        WorkloadIdentityTrust.gke(
            pool=POOL,
            cluster_url=CLUSTER_URL,
            issuer=controlplane.issuer,
            ca_pem=await asyncio.to_thread(Path(controlplane.ca_file).read_text),
        )
    )
    services.metadata.email = OPERATOR_GSA
    kube = KubeClient(load_connection(controlplane.kubeconfig))
    environment = IdentityEnv(controlplane, services, issuer, clock, kube)
    yield environment
    for resolver in environment.resolvers:
        await resolver.close()
    await kube.close()
    await services.close()


def new_namespace(k8s: k8s_client.ApiClient, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    k8s_client.CoreV1Api(k8s).create_namespace(
        k8s_client.V1Namespace(metadata=k8s_client.V1ObjectMeta(name=name))
    )
    return name


def counter(step: str, result: str = "ok") -> float:
    value = REGISTRY.get_sample_value(
        "gcpcall_identity_token_requests_total", {"step": step, "result": result}
    )
    return value or 0.0


async def test_workload_identity_end_to_end(
    env: IdentityEnv, k8s: k8s_client.ApiClient, namespace: str
) -> None:
    a = gsa("team-a")
    ensure_service_account(k8s, namespace, "runner", {ANNOTATION: a})
    env.services.iam.policy.grant(wi_member(namespace, "runner"), a)
    before = {step: counter(step) for step in ("TokenRequest", "STS", "GenerateAccessToken")}
    identity = await env.resolver(IdentityMode.WORKLOAD_IDENTITY).resolve(namespace, "runner")
    assert identity.email == a
    assert env.holder(identity.access_token) == a  # the services see a@... calling
    # the chain, as the emulator saw it: a verified KSA token -> STS -> generateAccessToken
    [exchange] = env.services.sts.exchanges()
    assert exchange.status == 200
    assert exchange.principal == env.principal(namespace, "runner")
    [call] = env.services.iam.calls()
    assert (call.caller, call.target, call.status) == (exchange.principal, a, 200)
    for step, value in before.items():
        assert counter(step) == value + 1, step


async def test_without_annotation_the_federated_principal_is_used(
    env: IdentityEnv, k8s: k8s_client.ApiClient, namespace: str
) -> None:
    ensure_service_account(k8s, namespace, "plain")
    identity = await env.resolver(IdentityMode.WORKLOAD_IDENTITY).resolve(namespace, "plain")
    assert identity.email is None
    assert env.holder(identity.access_token) == env.principal(namespace, "plain")
    assert env.services.iam.calls() == []


async def test_isolation_between_namespaces(
    env: IdentityEnv, k8s: k8s_client.ApiClient, namespace: str
) -> None:
    team_a, team_b = namespace, new_namespace(k8s, "team-b")
    a = gsa("team-a-runner")
    ensure_service_account(k8s, team_a, "runner", {ANNOTATION: a})
    ensure_service_account(k8s, team_a, "only-in-a", {ANNOTATION: a})
    ensure_service_account(k8s, team_b, "runner", {ANNOTATION: a})  # B claims A's GSA
    env.services.iam.policy.grant(wi_member(team_a, "runner"), a)
    resolver = env.resolver(IdentityMode.WORKLOAD_IDENTITY)
    assert (await resolver.resolve(team_a, "runner")).email == a
    with pytest.raises(IdentityNotReady) as denied:
        await resolver.resolve(team_b, "runner")
    assert denied.value.step == "GenerateAccessToken"
    assert "PERMISSION_DENIED" in denied.value.message
    assert "iam.serviceAccounts.getAccessToken" in denied.value.message
    # an object in B can only name KSAs in B: A's KSA is simply not there
    with pytest.raises(IdentityNotReady) as missing:
        await resolver.resolve(team_b, "only-in-a")
    assert missing.value.step == "ServiceAccount"
    assert "not found" in missing.value.message
    refused = [c for c in env.services.iam.calls() if c.status == 403]
    assert [c.caller for c in refused] == [env.principal(team_b, "runner")]


async def first_refusal(resolver: IdentityResolver, namespace: str, ksa: str) -> IdentityNotReady:
    """The refusal once the new Role is in force (RBAC reaches the authorizer via an informer:
    until then even `get serviceaccounts` is refused)."""
    for _ in range(50):
        with pytest.raises(IdentityNotReady) as info:
            await resolver.resolve(namespace, ksa)
        if info.value.step != "ServiceAccount":
            return info.value
        await asyncio.sleep(0.1)
    return info.value


async def test_token_request_needs_the_rbac_the_chart_ships(
    env: IdentityEnv, k8s: k8s_client.ApiClient, namespace: str
) -> None:
    """The operator as a ServiceAccount: serviceaccounts get alone is not enough."""
    a = gsa("rbac")
    ensure_service_account(k8s, namespace, "runner", {ANNOTATION: a})
    env.services.iam.policy.grant(wi_member(namespace, "runner"), a)
    ensure_service_account(k8s, namespace, "operator")
    rbac = k8s_client.RbacAuthorizationV1Api(k8s)
    rules = [k8s_client.V1PolicyRule(api_groups=[""], resources=["serviceaccounts"], verbs=["get"])]
    rbac.create_namespaced_role(
        namespace,
        k8s_client.V1Role(metadata=k8s_client.V1ObjectMeta(name="identity"), rules=rules),
    )
    rbac.create_namespaced_role_binding(
        namespace,
        k8s_client.V1RoleBinding(
            metadata=k8s_client.V1ObjectMeta(name="identity"),
            role_ref=k8s_client.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="Role", name="identity"
            ),
            subjects=[
                k8s_client.RbacV1Subject(
                    kind="ServiceAccount", name="operator", namespace=namespace
                )
            ],
        ),
    )
    token = service_account_token(k8s, namespace, "operator")
    connection = Connection(
        server=env.controlplane.server, ca_path=env.controlplane.ca_file, token=token
    )
    operator_kube = KubeClient(connection)
    try:
        resolver = env.resolver(IdentityMode.WORKLOAD_IDENTITY, kube=operator_kube)
        refused = await first_refusal(resolver, namespace, "runner")
        assert refused.step == "TokenRequest"
        assert "403" in refused.message
        assert "serviceaccounts/token" in refused.message
        rules.append(
            k8s_client.V1PolicyRule(
                api_groups=[""], resources=["serviceaccounts/token"], verbs=["create"]
            )
        )
        rbac.replace_namespaced_role(
            "identity",
            namespace,
            k8s_client.V1Role(metadata=k8s_client.V1ObjectMeta(name="identity"), rules=rules),
        )
        last: IdentityNotReady | None = None
        for _ in range(50):  # RBAC changes reach the authorizer through an informer
            try:
                identity = await resolver.resolve(namespace, "runner")
                break
            except IdentityNotReady as error:
                last = error
                await asyncio.sleep(0.1)
        else:
            pytest.fail(f"still refused after the role was extended: {last}")
        assert identity.email == a
    finally:
        await operator_kube.close()


async def test_sts_refusal_names_the_step(
    env: IdentityEnv, k8s: k8s_client.ApiClient, namespace: str
) -> None:
    ensure_service_account(k8s, namespace, "runner", {ANNOTATION: gsa("x")})
    resolver = env.resolver(IdentityMode.WORKLOAD_IDENTITY, cluster_url="https://unknown-cluster")
    with pytest.raises(IdentityNotReady) as refused:
        await resolver.resolve(namespace, "runner")
    assert refused.value.step == "STS"
    assert refused.value.message.startswith("invalid_target:")


async def test_impersonation_through_a_delegation_chain_of_two(
    env: IdentityEnv, k8s: k8s_client.ApiClient, namespace: str
) -> None:
    target = gsa("impersonated")
    ensure_service_account(k8s, namespace, "runner", {ANNOTATION: target})
    ensure_service_account(k8s, namespace, "unannotated")
    policy = env.services.iam.policy
    policy.grant(OPERATOR_GSA, D1)
    policy.grant(D1, D2)
    policy.grant(D2, target)
    resolver = env.resolver(IdentityMode.IMPERSONATION, impersonation_delegates=(D1, D2))
    identity = await resolver.resolve(namespace, "runner")
    assert identity.email == target
    assert env.holder(identity.access_token) == target
    [call] = env.services.iam.calls()
    assert call.caller == OPERATOR_GSA
    assert call.delegates == (
        f"projects/-/serviceAccounts/{D1}",
        f"projects/-/serviceAccounts/{D2}",
    )
    assert env.services.sts.exchanges() == []  # no TokenRequest/STS in this mode
    with pytest.raises(IdentityNotReady) as missing:
        await resolver.resolve(namespace, "unannotated")
    assert missing.value.step == "Annotation"
    policy.revoke(D1, D2)
    resolver.invalidate(namespace, "runner")
    with pytest.raises(IdentityNotReady) as broken:
        await resolver.resolve(namespace, "runner")
    assert broken.value.step == "GenerateAccessToken"
    assert "PERMISSION_DENIED" in broken.value.message


async def test_operator_mode_uses_the_metadata_server(env: IdentityEnv, namespace: str) -> None:
    resolver = env.resolver(IdentityMode.OPERATOR)
    identity = await resolver.resolve(namespace, None)
    assert identity.email == OPERATOR_GSA
    assert env.holder(identity.access_token) == OPERATOR_GSA
    assert (await resolver.resolve("elsewhere", "anything")).access_token == identity.access_token
    assert env.services.metadata.token_requests == 1


async def test_a_token_near_expiry_is_refreshed_before_use(
    env: IdentityEnv, k8s: k8s_client.ApiClient, namespace: str
) -> None:
    a = gsa("expiry")
    ensure_service_account(k8s, namespace, "runner", {ANNOTATION: a})
    env.services.iam.policy.grant(wi_member(namespace, "runner"), a)
    resolver = env.resolver(IdentityMode.WORKLOAD_IDENTITY)
    first = await resolver.resolve(namespace, "runner")
    env.clock.advance(3600 - 301)
    assert (await resolver.resolve(namespace, "runner")).access_token == first.access_token
    env.clock.advance(2)  # 299 s left: within the refresh margin
    second = await resolver.resolve(namespace, "runner")
    assert second.access_token != first.access_token
    assert env.holder(first.access_token) == a  # the old one had not lapsed yet
    assert env.holder(second.access_token) == a
    assert len(env.services.sts.exchanges()) == 2
    assert len(env.services.iam.calls()) == 2
    env.clock.advance(3600)  # nobody resolved for an hour: the cached token has expired
    third = await resolver.resolve(namespace, "runner")
    assert env.holder(second.access_token) is None
    assert env.holder(third.access_token) == a


async def test_a_revoked_token_is_replaced_on_retry(
    env: IdentityEnv, k8s: k8s_client.ApiClient, namespace: str
) -> None:
    a = gsa("revoked")
    ensure_service_account(k8s, namespace, "runner", {ANNOTATION: a})
    env.services.iam.policy.grant(wi_member(namespace, "runner"), a)
    resolver = env.resolver(IdentityMode.WORKLOAD_IDENTITY)
    first = await resolver.resolve(namespace, "runner")
    assert first.access_token is not None
    env.services.iam.revoke_token(first.access_token)
    # what a reconciler does on UNAUTHENTICATED: invalidate, resolve, retry once
    assert env.holder(first.access_token) is None
    resolver.invalidate(namespace, "runner")
    second = await resolver.resolve(namespace, "runner")
    assert second.access_token != first.access_token
    assert env.holder(second.access_token) == a


async def test_impersonation_replaces_a_revoked_operator_token(
    env: IdentityEnv, k8s: k8s_client.ApiClient, namespace: str
) -> None:
    for name in ("one", "two"):
        ensure_service_account(k8s, namespace, name, {ANNOTATION: gsa(name)})
        env.services.iam.policy.grant(OPERATOR_GSA, gsa(name))
    resolver = env.resolver(IdentityMode.IMPERSONATION)
    await resolver.resolve(namespace, "one")
    for token in env.services.metadata.issued_tokens():
        env.services.iam.revoke_token(token)
    identity = await resolver.resolve(namespace, "two")  # 401 with the old source, then ok
    assert env.holder(identity.access_token) == gsa("two")
    assert env.services.metadata.token_requests == 2
    assert [c.status for c in env.services.iam.calls()] == [200, 401, 200]


async def test_p6_token_requests_over_ten_simulated_minutes(
    env: IdentityEnv, k8s: k8s_client.ApiClient, namespace: str
) -> None:
    """200 resolves of 5 identities, concurrent bursts every 30 s for 10 minutes."""
    identities = [f"runner-{i}" for i in range(5)]
    for ksa in identities:
        ensure_service_account(k8s, namespace, ksa, {ANNOTATION: gsa(ksa)})
        env.services.iam.policy.grant(wi_member(namespace, ksa), gsa(ksa))
    resolver = env.resolver(IdentityMode.WORKLOAD_IDENTITY)
    token_requests = counter("TokenRequest")
    resolved = 0
    for _ in range(20):
        burst = [resolver.resolve(namespace, ksa) for ksa in identities for _ in range(2)]
        results = await asyncio.gather(*burst)
        assert [r.email for r in results] == [gsa(k) for k in identities for _ in range(2)]
        resolved += len(results)
        env.clock.advance(30)
    assert resolved == 200
    exchanges = [e.principal or "" for e in env.services.sts.exchanges()]
    calls = [c.target for c in env.services.iam.calls()]
    assert sorted(exchanges) == sorted(env.principal(namespace, k) for k in identities)
    assert sorted(calls) == sorted(gsa(k) for k in identities)
    assert counter("TokenRequest") - token_requests == 5


async def test_no_token_material_in_logs_or_errors(
    env: IdentityEnv,
    k8s: k8s_client.ApiClient,
    namespace: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    a = gsa("quiet")
    ensure_service_account(k8s, namespace, "runner", {ANNOTATION: a})
    ensure_service_account(k8s, namespace, "denied", {ANNOTATION: gsa("nobody")})
    env.services.iam.policy.grant(wi_member(namespace, "runner"), a)
    seen: list[str] = []
    for mode in IdentityMode:
        resolver = env.resolver(mode, impersonation_delegates=())
        env.services.iam.policy.grant(OPERATOR_GSA, a)
        for ksa in ("runner", "denied", "missing"):
            try:
                identity = await resolver.resolve(namespace, ksa)
                seen.append(repr(identity))
                seen.append(str(identity))
            except IdentityNotReady as error:
                seen.append(str(error))
    text = "\n".join(seen + [record.getMessage() for record in caplog.records])
    assert any("GenerateAccessToken: PERMISSION_DENIED" in s for s in seen)
    assert any("new token for" in record.getMessage() for record in caplog.records)
    assert TOKENISH.search(text) is None, TOKENISH.search(text)
    for token in env.services.metadata.issued_tokens():
        assert token not in text


def test_tokenish_pattern_catches_both_kinds() -> None:
    assert TOKENISH.search("Bearer ya29.emu.abc")
    assert TOKENISH.search("eyJhbGciOiJSUzI1NiIsImtpZCI6")
    assert not TOKENISH.search("GoogleIdentity(email='a@p.iam.gserviceaccount.com')")
