"""The operator's settings: one frozen dataclass, read once from the environment.

Why one place: every layer needs a few settings (cluster name, defaults, endpoints), and
reading `os.environ` all over the code makes behaviour depend on import order and makes
tests leak settings into each other. Handlers get a `Settings` built at startup.

Endpoints default to the real Google services; pointing them elsewhere (the local
emulator, a proxy) is a settings change only: nothing else in the code knows where
Google is.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["Endpoints", "IdentityMode", "Settings"]


class IdentityMode(StrEnum):
    WORKLOAD_IDENTITY = "WorkloadIdentity"
    IMPERSONATION = "Impersonation"
    OPERATOR = "Operator"


@dataclass(frozen=True)
class Endpoints:
    """Where the Google services are. Defaults are production Google."""

    scheduler: str = "cloudscheduler.googleapis.com:443"  # gRPC target
    tasks: str = "cloudtasks.googleapis.com:443"  # gRPC target
    grpc_insecure: bool = False  # plaintext gRPC (emulator only)
    sts: str = "https://sts.googleapis.com/v1/token"
    iam_credentials: str = "https://iamcredentials.googleapis.com"
    # Google's OIDC signing certificates (PEM, by key id): what the relay verifies ID tokens
    # of Cloud Scheduler and Cloud Tasks against.
    oidc_certs: str = "https://www.googleapis.com/oauth2/v1/certs"
    metadata_host: str | None = None  # GCE metadata server host:port; None = the default
    # Routes https://<host>/... to another base URL, e.g. {"compute.googleapis.com": "http://127.0.0.1:8089"}
    host_map: Mapping[str, str] = field(default_factory=dict)
    # An emulator accepts http:// target URIs; production Google does not.
    allow_http_targets: bool = False


@dataclass(frozen=True)
class Settings:
    cluster_name: str = "default"
    default_project: str | None = None
    default_location: str | None = None
    default_service_account: str | None = None  # KSA name used when a spec names none
    identity_mode: IdentityMode = IdentityMode.WORKLOAD_IDENTITY
    # Workload Identity: the STS audience. Empty means GKE's
    # identitynamespace:<workload_pool>:<cluster_url>.
    workload_pool: str | None = None  # <PROJECT>.svc.id.goog
    cluster_url: str | None = None
    sts_audience: str | None = None  # a Workload Identity Federation provider, outside GKE
    impersonation_delegates: tuple[str, ...] = ()
    relay_url: str | None = None  # the relay's public https URL (delivery: Relay)
    relay_port: int = 8443  # where the relay listens; 0: no relay in this process
    relay_address: str = "0.0.0.0"  # noqa: S104 - a pod's port, behind the Service
    oidc_issuer: str = "https://accounts.google.com"  # `iss` of the tokens the relay accepts
    drift_check_seconds: float = 600.0  # slow cadence for idle objects
    run_settle_seconds: float = 2.0  # how long after a due run the sync lists
    events_per_second: float = 25.0  # the pace of Event posts (bursts of 100)
    endpoints: Endpoints = field(default_factory=Endpoints)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read `GCPCALL_*` variables; unknown or empty ones fall back to defaults."""
        e = os.environ if env is None else env

        def opt(name: str) -> str | None:
            value = e.get(name, "").strip()
            return value or None

        host_map: dict[str, str] = {}
        for pair in (opt("GCPCALL_HOST_MAP") or "").split(","):
            if "=" in pair:
                host, target = pair.split("=", 1)
                host_map[host.strip()] = target.strip()
        defaults = Endpoints()
        endpoints = Endpoints(
            scheduler=opt("GCPCALL_SCHEDULER_ENDPOINT") or defaults.scheduler,
            tasks=opt("GCPCALL_TASKS_ENDPOINT") or defaults.tasks,
            grpc_insecure=(opt("GCPCALL_GRPC_INSECURE") or "false").lower() == "true",
            sts=opt("GCPCALL_STS_ENDPOINT") or defaults.sts,
            iam_credentials=opt("GCPCALL_IAM_CREDENTIALS_ENDPOINT") or defaults.iam_credentials,
            oidc_certs=opt("GCPCALL_OIDC_CERTS_URL") or defaults.oidc_certs,
            metadata_host=opt("GCE_METADATA_HOST"),
            host_map=host_map,
            allow_http_targets=(opt("GCPCALL_ALLOW_HTTP_TARGETS") or "false").lower() == "true",
        )
        delegates = tuple(d for d in (opt("GCPCALL_IMPERSONATION_DELEGATES") or "").split(",") if d)
        return cls(
            cluster_name=opt("GCPCALL_CLUSTER_NAME") or "default",
            default_project=opt("GCPCALL_PROJECT"),
            default_location=opt("GCPCALL_LOCATION"),
            default_service_account=opt("GCPCALL_SERVICE_ACCOUNT"),
            identity_mode=IdentityMode(opt("GCPCALL_IDENTITY_MODE") or "WorkloadIdentity"),
            workload_pool=opt("GCPCALL_WORKLOAD_POOL"),
            cluster_url=opt("GCPCALL_CLUSTER_URL"),
            sts_audience=opt("GCPCALL_STS_AUDIENCE"),
            impersonation_delegates=delegates,
            relay_url=opt("GCPCALL_RELAY_URL"),
            relay_port=int(opt("GCPCALL_RELAY_PORT") or 8443),
            relay_address=opt("GCPCALL_RELAY_ADDRESS") or "0.0.0.0",  # noqa: S104
            oidc_issuer=opt("GCPCALL_OIDC_ISSUER") or "https://accounts.google.com",
            drift_check_seconds=float(opt("GCPCALL_DRIFT_CHECK_SECONDS") or 600),
            run_settle_seconds=float(opt("GCPCALL_RUN_SETTLE_SECONDS") or 2),
            events_per_second=float(opt("GCPCALL_EVENTS_PER_SECOND") or 25),
            endpoints=endpoints,
        )
