"""IdentityResolver's logic with the network steps stubbed: keys, modes, diagnostics, cache.

The real chain (API server, STS, IAM Credentials, metadata server) is exercised in
tests/integration/test_identity_*.py; here each step only counts and answers.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from typing import Any

import pytest

from gcpcall.config import Endpoints, IdentityMode, Settings
from gcpcall.gcp.identity import ANNOTATION, GoogleIdentity, IdentityNotReady, IdentityResolver
from gcpcall.gcp.identity_steps import IdentitySteps, _google_message, parse_google_time
from gcpcall.gcp.tokens import AccessToken
from gcpcall.kube import Connection, KubeClient, KubeError


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


class FakeKube(KubeClient):
    def __init__(self) -> None:
        super().__init__(Connection(server="https://unused.invalid"))
        self.accounts: dict[tuple[str, str], dict[str, str]] = {}
        self.gets = 0
        self.token_requests: list[tuple[str, str, list[str], int]] = []
        self.forbid_tokens = False

    async def get_service_account(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.gets += 1
        annotations = self.accounts.get((namespace, name))
        if annotations is None:
            return None
        return {"metadata": {"name": name, "namespace": namespace, "annotations": annotations}}

    async def create_token(
        self, namespace: str, name: str, audiences: list[str], seconds: int
    ) -> tuple[str, str]:
        if self.forbid_tokens:
            raise KubeError(403, "Forbidden", "cannot create resource serviceaccounts/token")
        self.token_requests.append((namespace, name, audiences, seconds))
        return f"ksa-jwt-{namespace}-{name}", "2030-01-01T00:00:00Z"


class FakeSteps(IdentitySteps):
    def __init__(self, clock: FakeClock) -> None:
        super().__init__(Endpoints(), clock=clock)
        self.clock = clock
        self.sts: list[tuple[str, str, tuple[str, ...]]] = []
        self.gat: list[tuple[str | None, str, tuple[str, ...], tuple[str, ...]]] = []
        self.metadata = 0
        self.deny: set[str] = set()
        self.reject_sources: set[str] = set()
        self.gate: asyncio.Event | None = None
        self.serial = 0

    def _token(self, prefix: str) -> str:
        self.serial += 1
        return f"{prefix}-{self.serial}"

    async def sts_exchange(
        self, subject_token: str, audience: str, scopes: Sequence[str]
    ) -> AccessToken:
        self.sts.append((subject_token, audience, tuple(scopes)))
        if self.gate is not None:
            await self.gate.wait()
        return AccessToken(self._token("federated"), None, self.clock() + 3600)

    async def generate_access_token(
        self,
        source: AccessToken,
        email: str,
        scopes: Sequence[str],
        *,
        delegates: Sequence[str] = (),
        lifetime_seconds: int = 3600,
    ) -> AccessToken:
        self.gat.append((source.value, email, tuple(scopes), tuple(delegates)))
        if source.value in self.reject_sources:
            raise IdentityNotReady("GenerateAccessToken", "UNAUTHENTICATED: ...", status=401)
        if email in self.deny:
            raise IdentityNotReady(
                "GenerateAccessToken", "PERMISSION_DENIED: Permission denied", status=403
            )
        return AccessToken(self._token("gsa"), email, self.clock() + lifetime_seconds)

    async def metadata_token(self, scopes: Sequence[str]) -> AccessToken:
        self.metadata += 1
        return AccessToken(
            self._token("metadata"), "op@p.iam.gserviceaccount.com", self.clock() + 3600
        )


POOL = "p.svc.id.goog"
CLUSTER = "https://container.googleapis.com/v1/projects/p/locations/l/clusters/c"


_RESOLVER_OPTIONS = {"refresh_margin", "ksa_ttl", "failure_ttl"}


def make(
    mode: IdentityMode = IdentityMode.WORKLOAD_IDENTITY, **options: Any
) -> tuple[IdentityResolver, FakeKube, FakeSteps, FakeClock]:
    """A resolver over fakes; `options` are Settings fields or resolver tuning knobs."""
    clock = FakeClock()
    kube = FakeKube()
    steps = FakeSteps(clock)
    tuning = {k: options.pop(k) for k in list(options) if k in _RESOLVER_OPTIONS}
    base = Settings(identity_mode=mode, workload_pool=POOL, cluster_url=CLUSTER)
    resolver = IdentityResolver(
        dataclasses.replace(base, **options), kube, clock=clock, steps=steps, **tuning
    )
    return resolver, kube, steps, clock


async def test_workload_identity_chain_and_single_flight() -> None:
    resolver, kube, steps, _ = make()
    kube.accounts[("team-a", "runner")] = {ANNOTATION: "a@p.iam.gserviceaccount.com"}
    steps.gate = asyncio.Event()
    pending = [asyncio.ensure_future(resolver.resolve("team-a", "runner")) for _ in range(50)]
    for _ in range(5):
        await asyncio.sleep(0)
    steps.gate.set()
    identities = await asyncio.gather(*pending)
    assert {i.email for i in identities} == {"a@p.iam.gserviceaccount.com"}
    assert len({i.access_token for i in identities}) == 1
    assert kube.gets == 1  # one KSA read for 50 concurrent resolves
    assert kube.token_requests == [("team-a", "runner", [POOL], 600)]
    assert steps.sts == [
        (
            "ksa-jwt-team-a-runner",
            f"identitynamespace:{POOL}:{CLUSTER}",
            ("https://www.googleapis.com/auth/cloud-platform",),
        )
    ]
    assert [g[1] for g in steps.gat] == ["a@p.iam.gserviceaccount.com"]
    assert steps.gat[0][0] is not None
    assert steps.gat[0][0].startswith("federated-")


async def test_workload_identity_without_annotation_uses_the_federated_token() -> None:
    resolver, kube, steps, _ = make()
    kube.accounts[("team-a", "runner")] = {}
    identity = await resolver.resolve("team-a", "runner")
    assert identity.email is None
    assert identity.access_token is not None
    assert identity.access_token.startswith("federated-")
    assert steps.gat == []


async def test_wif_provider_audience_is_used_for_both_audiences() -> None:
    provider = (
        "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/x/providers/k"
    )
    resolver, kube, steps, _ = make(workload_pool=None, cluster_url=None, sts_audience=provider)
    kube.accounts[("ns", "ksa")] = {ANNOTATION: "g@p.iam.gserviceaccount.com"}
    await resolver.resolve("ns", "ksa")
    assert kube.token_requests[0][2] == [provider]
    assert steps.sts[0][1] == provider


async def test_missing_configuration_is_named() -> None:
    resolver, kube, _, _ = make(workload_pool=None, cluster_url=None)
    kube.accounts[("ns", "ksa")] = {}
    with pytest.raises(IdentityNotReady) as info:
        await resolver.resolve("ns", "ksa")
    assert info.value.step == "Configuration"


async def test_diagnostics_name_the_failing_step() -> None:
    resolver, kube, steps, _ = make(failure_ttl=0)
    with pytest.raises(IdentityNotReady) as info:
        await resolver.resolve("ns", None)
    assert info.value.step == "ServiceAccount"
    with pytest.raises(IdentityNotReady) as info:
        await resolver.resolve("ns", "ghost")
    assert info.value.step == "ServiceAccount"
    assert '"ghost" not found in namespace "ns"' in info.value.message
    kube.accounts[("ns", "ksa")] = {ANNOTATION: "denied@p.iam.gserviceaccount.com"}
    kube.forbid_tokens = True
    with pytest.raises(IdentityNotReady) as info:
        await resolver.resolve("ns", "ksa")
    assert info.value.step == "TokenRequest"
    assert "403 Forbidden" in str(info.value)
    kube.forbid_tokens = False
    steps.deny.add("denied@p.iam.gserviceaccount.com")
    with pytest.raises(IdentityNotReady) as info:
        await resolver.resolve("ns", "ksa")
    assert info.value.step == "GenerateAccessToken"
    assert "PERMISSION_DENIED" in info.value.message


async def test_default_service_account_applies_when_the_object_names_none() -> None:
    resolver, kube, _, _ = make(default_service_account="default-runner")
    kube.accounts[("ns", "default-runner")] = {ANNOTATION: "d@p.iam.gserviceaccount.com"}
    identity = await resolver.resolve("ns", None)
    assert identity.email == "d@p.iam.gserviceaccount.com"


async def test_ksa_lookup_is_cached_and_annotation_change_switches_identity() -> None:
    resolver, kube, _, clock = make(ksa_ttl=30)
    kube.accounts[("ns", "ksa")] = {ANNOTATION: "one@p.iam.gserviceaccount.com"}
    first = await resolver.resolve("ns", "ksa")
    kube.accounts[("ns", "ksa")] = {ANNOTATION: "two@p.iam.gserviceaccount.com"}
    clock.now += 10
    assert (await resolver.resolve("ns", "ksa")).email == "one@p.iam.gserviceaccount.com"
    assert kube.gets == 1
    clock.now += 25  # the KSA is read again
    second = await resolver.resolve("ns", "ksa")
    assert second.email == "two@p.iam.gserviceaccount.com"
    assert second.access_token != first.access_token
    assert kube.gets == 2
    kube.accounts[("ns", "ksa")] = {ANNOTATION: "one@p.iam.gserviceaccount.com"}
    resolver.invalidate("ns", "ksa")  # no waiting for the TTL
    third = await resolver.resolve("ns", "ksa")
    assert third.email == "one@p.iam.gserviceaccount.com"
    assert third.access_token != first.access_token  # the old GSA's token was dropped


async def test_deleted_ksa_stops_the_identity() -> None:
    resolver, kube, _, clock = make(ksa_ttl=30, failure_ttl=0)
    kube.accounts[("ns", "ksa")] = {ANNOTATION: "a@p.iam.gserviceaccount.com"}
    await resolver.resolve("ns", "ksa")
    del kube.accounts[("ns", "ksa")]
    clock.now += 31
    with pytest.raises(IdentityNotReady) as info:
        await resolver.resolve("ns", "ksa")
    assert info.value.step == "ServiceAccount"


async def test_scopes_are_part_of_the_key() -> None:
    resolver, kube, steps, _ = make()
    kube.accounts[("ns", "ksa")] = {ANNOTATION: "a@p.iam.gserviceaccount.com"}
    await resolver.resolve("ns", "ksa")
    await resolver.resolve("ns", "ksa", scopes=["https://www.googleapis.com/auth/cloud-tasks"])
    await resolver.resolve("ns", "ksa", scopes=["https://www.googleapis.com/auth/cloud-tasks"])
    assert [g[2] for g in steps.gat] == [
        ("https://www.googleapis.com/auth/cloud-platform",),
        ("https://www.googleapis.com/auth/cloud-tasks",),
    ]


async def test_identities_do_not_share_tokens_across_namespaces() -> None:
    resolver, kube, _, _ = make()
    kube.accounts[("a", "runner")] = {ANNOTATION: "same@p.iam.gserviceaccount.com"}
    kube.accounts[("b", "runner")] = {ANNOTATION: "same@p.iam.gserviceaccount.com"}
    one = await resolver.resolve("a", "runner")
    two = await resolver.resolve("b", "runner")
    assert one.access_token != two.access_token
    assert len(kube.token_requests) == 2


async def test_impersonation_needs_the_annotation_and_uses_delegates() -> None:
    delegates = ("d1@p.iam.gserviceaccount.com", "d2@p.iam.gserviceaccount.com")
    resolver, kube, steps, _ = make(
        IdentityMode.IMPERSONATION,
        impersonation_delegates=delegates,
        endpoints=Endpoints(metadata_host="127.0.0.1:1"),
    )
    kube.accounts[("ns", "plain")] = {}
    with pytest.raises(IdentityNotReady) as info:
        await resolver.resolve("ns", "plain")
    assert info.value.step == "Annotation"
    kube.accounts[("ns", "ksa")] = {ANNOTATION: "t@p.iam.gserviceaccount.com"}
    identity = await resolver.resolve("ns", "ksa")
    assert identity.email == "t@p.iam.gserviceaccount.com"
    assert steps.gat[0][3] == delegates
    assert steps.metadata == 1
    assert kube.token_requests == []  # no TokenRequest in this mode


async def test_impersonation_replaces_a_rejected_source_token_once() -> None:
    resolver, kube, steps, _ = make(
        IdentityMode.IMPERSONATION, endpoints=Endpoints(metadata_host="127.0.0.1:1")
    )
    kube.accounts[("ns", "ksa")] = {ANNOTATION: "t@p.iam.gserviceaccount.com"}
    kube.accounts[("ns", "other")] = {ANNOTATION: "u@p.iam.gserviceaccount.com"}
    await resolver.resolve("ns", "ksa")
    source = steps.gat[0][0]
    assert source is not None
    steps.reject_sources.add(source)
    identity = await resolver.resolve("ns", "other")
    assert identity.email == "u@p.iam.gserviceaccount.com"
    assert steps.metadata == 2
    assert steps.gat[-1][0] != source


async def test_operator_mode_sources() -> None:
    resolver, _, steps, _ = make(
        IdentityMode.OPERATOR, endpoints=Endpoints(metadata_host="127.0.0.1:1")
    )
    identity = await resolver.resolve("ns", None)
    assert identity.email == "op@p.iam.gserviceaccount.com"
    assert identity.access_token is not None
    await resolver.resolve("other", "whatever")
    assert steps.metadata == 1
    resolver.invalidate("ns", "x")  # a rejected token: the shared operator token goes
    await resolver.resolve("ns", None)
    assert steps.metadata == 2

    anonymous, _, steps, _ = make(IdentityMode.OPERATOR, endpoints=Endpoints(grpc_insecure=True))
    identity = await anonymous.resolve("ns", None)
    assert identity == GoogleIdentity(email=None, access_token=None)
    assert identity.grpc_metadata() == ()
    assert steps.metadata == 0


async def test_refresh_before_expiry_reuses_nothing_stale() -> None:
    resolver, kube, steps, clock = make(refresh_margin=300, ksa_ttl=1e9)
    kube.accounts[("ns", "ksa")] = {ANNOTATION: "a@p.iam.gserviceaccount.com"}
    first = await resolver.resolve("ns", "ksa")
    clock.now += 3200
    assert (await resolver.resolve("ns", "ksa")).access_token == first.access_token
    clock.now += 200  # 200 s left < the margin
    second = await resolver.resolve("ns", "ksa")
    assert second.access_token != first.access_token
    assert (len(steps.sts), len(steps.gat)) == (2, 2)


def test_repr_never_shows_the_token() -> None:
    identity = GoogleIdentity(email="a@p.iam.gserviceaccount.com", access_token="ya29.secret")
    assert "secret" not in repr(identity)
    assert "secret" not in str(identity)
    assert identity.grpc_metadata() == (("authorization", "Bearer ya29.secret"),)


def test_parse_google_time() -> None:
    assert parse_google_time("2020-04-07T15:01:23Z") == 1586271683.0
    assert parse_google_time("2020-04-07T15:01:23.045123456Z") == pytest.approx(1586271683.045123)
    assert parse_google_time("2020-04-07T17:01:23+02:00") == 1586271683.0


def test_google_error_messages() -> None:
    body = (
        b'{"error": {"code": 403, "message": "Permission denied", "status": "PERMISSION_DENIED"}}'
    )
    assert _google_message(403, body) == "PERMISSION_DENIED: Permission denied"
    oauth = b'{"error": "invalid_grant", "error_description": "The audience does not match"}'
    assert _google_message(400, oauth) == "invalid_grant: The audience does not match"
    assert _google_message(502, b"<html>bad gateway</html>") == "HTTP 502: <html>bad gateway</html>"
