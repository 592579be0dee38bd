"""Whose Google credentials a call uses: "credentials for this object".

Why one small interface: the ScheduledGcpCall and GcpTask reconcilers only need to know the
Google service account an object acts as (it is written to status and becomes the job's or
task's token service account) and a bearer token to put on the admin RPC. How that token is
obtained (Workload Identity, impersonation, the operator's own credentials) is this module's
business alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from gcpcall.config import IdentityMode, Settings
from gcpcall.kube import KubeClient

__all__ = ["GoogleIdentity", "IdentityNotReady", "IdentityResolver"]


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


class IdentityNotReady(Exception):
    """The identity chain failed at `step` (e.g. "ServiceAccount", "TokenRequest", "STS")."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"{step}: {message}")
        self.step = step
        self.message = message


class IdentityResolver:
    """Resolves (namespace, KSA) to a GoogleIdentity, caching tokens per identity."""

    def __init__(self, settings: Settings, kube: KubeClient) -> None:
        self.settings = settings
        self.kube = kube

    async def resolve(self, namespace: str, service_account: str | None) -> GoogleIdentity:
        if self.settings.identity_mode is IdentityMode.OPERATOR:
            return GoogleIdentity(email=None, access_token=None)
        raise IdentityNotReady("Mode", f"{self.settings.identity_mode} is not implemented yet")

    def invalidate(self, namespace: str, service_account: str) -> None:
        """Forget cached tokens for a KSA (its annotation changed or it was deleted)."""

    async def close(self) -> None:
        """Release HTTP sessions."""
