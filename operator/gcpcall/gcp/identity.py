"""Whose Google credentials a call uses: "credentials for this object".

Why one small interface: the ScheduledGcpCall and GcpTask reconcilers only need to know the
Google service account an object acts as (it is written to status and becomes the job's or
task's token service account) and a bearer token to put on the admin RPC. How that token is
obtained (Workload Identity, impersonation, the operator's own credentials) is this module's
business alone.

The three modes (architecture.md, "Identity"):

- WorkloadIdentity: TokenRequest for the object's KSA (audience: the workload pool, else the
  configured STS audience) -> STS token exchange (audience: the configured Workload Identity
  Federation provider, else GKE's `identitynamespace:<pool>:<cluster URL>`) -> if the KSA
  carries `iam.gke.io/gcp-service-account`, generateAccessToken for that GSA; otherwise the
  federated token itself (email None).
- Impersonation: the operator's own credentials (below) -> generateAccessToken for the KSA's
  annotated GSA (the annotation is required), through `settings.impersonation_delegates`.
- Operator: the operator's own credentials for everything. Which ones, in this order:
  1. `endpoints.metadata_host` set: the GCE/GKE metadata server at that host;
  2. else, `endpoints.grpc_insecure` (a plaintext emulator, never production Google): no
     credentials at all (`access_token=None`, no Authorization header). An emulator with
     authentication on answers UNAUTHENTICATED, which names the problem. Developer gcloud
     credentials are never sent to an emulator by accident;
  3. else google-auth's Application Default Credentials (key file, gcloud, metadata server
     at its default address), refreshed in a worker thread.

Caching: tokens per (mode, namespace, KSA, GSA, scopes), one refresh in flight per key,
refreshed `refresh_margin` seconds before expiry, or at three quarters of a short
lifetime (`tokens.SingleFlightCache`). The KSA's
annotation is read from the API server at most once per `ksa_ttl` seconds per KSA (a GET
per resolve would double the API load of every reconcile); the annotation's value is part
of the token key, so a changed annotation is a different identity once the KSA is read
again, and tokens for the old GSA are dropped then. `invalidate()` forgets a KSA at once
(called when the KSA changes or a token was rejected).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gcpcall.config import IdentityMode, Settings
from gcpcall.gcp.identity_metrics import CACHE_LOOKUPS, count_request
from gcpcall.gcp.identity_steps import CLOUD_PLATFORM, IdentityNotReady, IdentitySteps
from gcpcall.gcp.tokens import AccessToken, Expiring, SingleFlightCache
from gcpcall.kube import KubeClient, KubeError

__all__ = [
    "ANNOTATION",
    "CLOUD_PLATFORM",
    "GoogleIdentity",
    "IdentityNotReady",
    "IdentityResolver",
]

ANNOTATION = "iam.gke.io/gcp-service-account"

log = logging.getLogger(__name__)

# (mode, namespace, KSA, GSA, scopes); the operator's own token: (mode, None, None, None, scopes)
TokenKey = tuple[str, str | None, str | None, str | None, tuple[str, ...]]
_OPERATOR = "Operator"


@dataclass(frozen=True)
class GoogleIdentity:
    """The Google identity an object acts as, with a token good for the next call."""

    email: str | None  # the Google service account; None when unknown (Operator mode, ADC user)
    access_token: str | None  # None: anonymous (only against an emulator without auth)

    def grpc_metadata(self) -> tuple[tuple[str, str], ...]:
        if self.access_token is None:
            return ()
        return (("authorization", f"Bearer {self.access_token}"),)

    def __repr__(self) -> str:  # never print the token
        return f"GoogleIdentity(email={self.email!r})"


class IdentityResolver:
    """Resolves (namespace, KSA) to a GoogleIdentity, caching tokens per identity."""

    def __init__(
        self,
        settings: Settings,
        kube: KubeClient,
        *,
        clock: Callable[[], float] = time.time,
        refresh_margin: float = 300.0,
        ksa_ttl: float = 30.0,
        failure_ttl: float = 5.0,
        ksa_token_seconds: int = 600,
        token_lifetime_seconds: int = 3600,
        steps: IdentitySteps | None = None,
    ) -> None:
        self.settings = settings
        self.kube = kube
        self._clock = clock
        self._ksa_ttl = ksa_ttl
        self._ksa_token_seconds = ksa_token_seconds
        self._token_lifetime = token_lifetime_seconds
        self._steps = steps or IdentitySteps(settings.endpoints, clock=clock)
        self._tokens: SingleFlightCache[TokenKey, AccessToken] = SingleFlightCache(
            clock=clock, refresh_margin=refresh_margin, failure_ttl=failure_ttl
        )
        self._annotations: SingleFlightCache[tuple[str, str], str | None] = SingleFlightCache(
            clock=clock, refresh_margin=0.0, failure_ttl=failure_ttl, grace=math.inf
        )

    async def resolve(
        self,
        namespace: str,
        service_account: str | None,
        *,
        scopes: Sequence[str] = (CLOUD_PLATFORM,),
    ) -> GoogleIdentity:
        """The identity for an object in `namespace` naming KSA `service_account`.

        Raises IdentityNotReady naming the failing step: "ServiceAccount", "Annotation",
        "Configuration", "TokenRequest", "STS", "GenerateAccessToken", "Metadata" or "ADC".
        """
        mode = self.settings.identity_mode
        wanted = tuple(sorted(set(scopes))) or (CLOUD_PLATFORM,)
        if mode is IdentityMode.OPERATOR:
            token = await self._operator_token(wanted)
            return GoogleIdentity(email=token.email, access_token=token.value)
        ksa = service_account or self.settings.default_service_account
        if not ksa:
            raise IdentityNotReady(
                "ServiceAccount",
                "the object names no serviceAccountName and the operator has no default",
            )
        gsa = await self._annotation(namespace, ksa)
        if gsa is None and mode is IdentityMode.IMPERSONATION:
            raise IdentityNotReady(
                "Annotation",
                f'ServiceAccount "{ksa}" in namespace "{namespace}" has no {ANNOTATION} '
                "annotation; the Impersonation mode needs the Google service account to act as",
            )
        key: TokenKey = (mode.value, namespace, ksa, gsa, wanted)
        self._count_lookup(mode.value, key)

        async def load() -> Expiring[AccessToken]:
            if mode is IdentityMode.WORKLOAD_IDENTITY:
                token = await self._mint_workload_identity(namespace, ksa, gsa, wanted)
            else:
                assert gsa is not None  # checked above; for the type checker
                token = await self._mint_impersonated(gsa, wanted)
            log.info(
                "identity %s/%s: new token for %s, valid %.0f s",
                namespace,
                ksa,
                token.email or "its federated principal",
                token.expires_at - self._clock(),
            )
            return Expiring(token, token.expires_at)

        token = await self._tokens.get(key, load)
        return GoogleIdentity(email=token.email, access_token=token.value)

    async def call_token(
        self, namespace: str, service_account: str | None, *, kind: str, email: str | None,
        scope_or_audience: str,
    ) -> str | None:
        """The bearer token the relay puts on a target call, as Direct delivery would.

        `kind` "oauth": an access token for `scope_or_audience`; "oidc": an ID token with
        that audience. `email` other than the identity's own Google service account is
        impersonated from the identity (generateAccessToken / generateIdToken), so the call
        is made as the same account Cloud Scheduler would have used.
        """
        if kind == "oauth":
            identity = await self.resolve(namespace, service_account, scopes=(scope_or_audience,))
            if email is None or email == identity.email:
                return identity.access_token
        identity = await self.resolve(namespace, service_account)
        target = email or identity.email
        if not target:
            raise IdentityNotReady("Configuration", "no Google service account to mint the "
                                   "call's token for: set target.auth.serviceAccountEmail")
        source = AccessToken(identity.access_token, identity.email)
        key: TokenKey = (f"call-{kind}", namespace, service_account, target,
                         (scope_or_audience,))

        async def load() -> Expiring[AccessToken]:
            if kind == "oauth":
                token = await self._steps.generate_access_token(
                    source, target, (scope_or_audience,), lifetime_seconds=self._token_lifetime)
            else:
                token = await self._steps.generate_id_token(source, target, scope_or_audience)
            return Expiring(token, token.expires_at)

        return (await self._tokens.get(key, load)).value

    def invalidate(self, namespace: str, service_account: str) -> None:
        """Forget cached tokens for a KSA (its annotation changed, it was deleted, or a
        service rejected its token); the next resolve reads the KSA and mints anew. In the
        Operator mode every KSA shares the operator's token, so that token is forgotten."""
        self._annotations.discard(lambda k: k == (namespace, service_account))
        self._tokens.discard(lambda k: k[1] == namespace and k[2] == service_account)
        if self.settings.identity_mode is IdentityMode.OPERATOR:
            self._tokens.discard(lambda k: k[0] == _OPERATOR)

    async def close(self) -> None:
        """Release HTTP sessions."""
        await self._steps.close()

    def _count_lookup(self, mode: str, key: TokenKey) -> None:
        fresh = self._tokens.fresh(key)
        CACHE_LOOKUPS.labels(mode=mode, result="hit" if fresh else "miss").inc()

    async def _annotation(self, namespace: str, ksa: str) -> str | None:
        """The KSA's GSA annotation (None when absent), read at most once per ksa_ttl."""

        async def load() -> Expiring[str | None]:
            try:
                body = await self.kube.get_service_account(namespace, ksa)
            except KubeError as error:
                count_request("ServiceAccount", ok=False)
                raise IdentityNotReady(
                    "ServiceAccount", f"{error.status} {error.reason}: {error.message}"
                ) from None
            if body is None:
                count_request("ServiceAccount", ok=False)
                self._tokens.discard(lambda k: k[1] == namespace and k[2] == ksa)
                raise IdentityNotReady(
                    "ServiceAccount",
                    f'ServiceAccount "{ksa}" not found in namespace "{namespace}"',
                )
            count_request("ServiceAccount", ok=True)
            annotations = (body.get("metadata") or {}).get("annotations") or {}
            gsa = str(annotations.get(ANNOTATION, "")).strip() or None
            # tokens minted for a previous annotation value are not this KSA's any more
            self._tokens.discard(lambda k: k[1] == namespace and k[2] == ksa and k[3] != gsa)
            return Expiring(gsa, self._clock() + self._ksa_ttl)

        return await self._annotations.get((namespace, ksa), load)

    async def _operator_token(self, scopes: tuple[str, ...]) -> AccessToken:
        """The operator's own credentials (see the module docstring for the order)."""
        key: TokenKey = (_OPERATOR, None, None, None, scopes)
        self._count_lookup(_OPERATOR, key)

        async def load() -> Expiring[AccessToken]:
            endpoints = self.settings.endpoints
            if endpoints.metadata_host:
                token = await self._steps.metadata_token(scopes)
            elif endpoints.grpc_insecure:
                token = AccessToken(None, None, math.inf)
            else:
                token = await self._steps.adc_token(scopes)
            return Expiring(token, token.expires_at)

        return await self._tokens.get(key, load)

    async def _mint_workload_identity(
        self, namespace: str, ksa: str, gsa: str | None, scopes: tuple[str, ...]
    ) -> AccessToken:
        s = self.settings
        token_audience = s.workload_pool or s.sts_audience
        sts_audience = s.sts_audience or (
            f"identitynamespace:{s.workload_pool}:{s.cluster_url}"
            if s.workload_pool and s.cluster_url
            else None
        )
        if not token_audience or not sts_audience:
            raise IdentityNotReady(
                "Configuration",
                "the WorkloadIdentity mode needs the workload pool and the cluster URL "
                "(GKE), or the STS audience of a Workload Identity Federation provider",
            )
        try:
            subject_token, _ = await self.kube.create_token(
                namespace, ksa, [token_audience], self._ksa_token_seconds
            )
        except KubeError as error:
            count_request("TokenRequest", ok=False)
            raise IdentityNotReady(
                "TokenRequest", f"{error.status} {error.reason}: {error.message}"
            ) from None
        count_request("TokenRequest", ok=True)
        federated_scopes = (CLOUD_PLATFORM,) if gsa else scopes
        federated = await self._steps.sts_exchange(subject_token, sts_audience, federated_scopes)
        if gsa is None:
            return federated
        return await self._steps.generate_access_token(
            federated, gsa, scopes, lifetime_seconds=self._token_lifetime
        )

    async def _mint_impersonated(self, gsa: str, scopes: tuple[str, ...]) -> AccessToken:
        delegates = self.settings.impersonation_delegates
        source = await self._operator_token((CLOUD_PLATFORM,))
        try:
            return await self._steps.generate_access_token(
                source, gsa, scopes, delegates=delegates, lifetime_seconds=self._token_lifetime
            )
        except IdentityNotReady as error:
            if error.status != 401:
                raise
        # the operator's own token was rejected (revoked, expired early): replace it once
        self._tokens.discard(lambda k: k[0] == _OPERATOR)
        source = await self._operator_token((CLOUD_PLATFORM,))
        return await self._steps.generate_access_token(
            source, gsa, scopes, delegates=delegates, lifetime_seconds=self._token_lifetime
        )
