"""The operator's settings: one frozen dataclass, read once from the environment and checked.

Why one place: every layer needs a few settings (cluster name, defaults, endpoints), and
reading `os.environ` all over the code makes behaviour depend on import order and makes
tests leak settings into each other. Handlers get a `Settings` built at startup.

Why checked here: a mistyped variable (`GCPCALL_DRIFT_CHECK_SECONDS=10m`, an unknown
identity mode) used to surface as a traceback deep in startup, or not at all (a typo in a
boolean read as false). `Settings.from_env` refuses each bad value with one `SettingsError`
whose message is one line naming the variable, its value and what is allowed; the commands
print that line and exit 2. Unknown `GCPCALL_*` variables are warned about once, not
refused: a newer chart may set one that this version does not know.

Endpoints default to the real Google services; pointing them elsewhere (the local
emulator, a proxy) is a settings change only: nothing else in the code knows where
Google is.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

__all__ = [
    "KNOWN_VARIABLES",
    "Endpoints",
    "IdentityMode",
    "LogFormat",
    "Settings",
    "SettingsError",
    "pod_namespace",
    "unknown_variables",
]

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_E = TypeVar("_E", bound=StrEnum)

# Where the kubelet mounts the pod's ServiceAccount (the pod's namespace is a file there).
_SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
# The cluster name is a part of every job id (api/naming.py's rule: no "_", at most 63).
_CLUSTER = re.compile(r"^[A-Za-z0-9-]{1,63}$")
_MAX_SHOWN = 120  # characters of a refused value shown in the message


class IdentityMode(StrEnum):
    WORKLOAD_IDENTITY = "WorkloadIdentity"
    IMPERSONATION = "Impersonation"
    OPERATOR = "Operator"


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


class SettingsError(ValueError):
    """One refused `GCPCALL_*` value; `str()` is one line: variable, value, what is allowed."""

    def __init__(self, variable: str, value: str, allowed: str) -> None:
        shown = value if len(value) <= _MAX_SHOWN else value[: _MAX_SHOWN - 3] + "..."
        super().__init__(f"invalid setting {variable}={shown!r}: {allowed}")
        self.variable = variable
        self.value = value
        self.allowed = allowed


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
    # Leader election over a coordination.k8s.io Lease (client-go's defaults: 15/10/2 s).
    leader_election: bool = False
    lease_name: str = "gcpcall-operator"
    lease_namespace: str = "default"  # from_env: the pod's own namespace when in a pod
    lease_duration_seconds: float = 15.0
    lease_renew_seconds: float = 10.0
    lease_retry_seconds: float = 2.0
    log_format: LogFormat = LogFormat.TEXT

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, warn_unknown: bool = True
                 ) -> Settings:
        """Read and check the `GCPCALL_*` variables; unset or empty ones take their defaults.

        Raises `SettingsError` for the first bad value. `warn_unknown`: log one warning
        (once per process) naming the `GCPCALL_*` variables this version does not read.
        """
        read = _Reader(os.environ if env is None else env)
        allow_http = read.boolean("GCPCALL_ALLOW_HTTP_TARGETS", False)
        defaults = Endpoints()
        endpoints = Endpoints(
            scheduler=read.grpc_target("GCPCALL_SCHEDULER_ENDPOINT", defaults.scheduler),
            tasks=read.grpc_target("GCPCALL_TASKS_ENDPOINT", defaults.tasks),
            grpc_insecure=read.boolean("GCPCALL_GRPC_INSECURE", False),
            sts=read.url("GCPCALL_STS_ENDPOINT", defaults.sts, allow_http=True),
            iam_credentials=read.url("GCPCALL_IAM_CREDENTIALS_ENDPOINT",
                                     defaults.iam_credentials, allow_http=True),
            oidc_certs=read.url("GCPCALL_OIDC_CERTS_URL", defaults.oidc_certs, allow_http=True),
            metadata_host=read.opt("GCE_METADATA_HOST"),
            host_map=read.host_map("GCPCALL_HOST_MAP"),
            allow_http_targets=allow_http,
        )
        relay_url = read.opt("GCPCALL_RELAY_URL")
        if relay_url is not None:
            read.url("GCPCALL_RELAY_URL", relay_url, allow_http=allow_http,
                     why_http="(http:// only with GCPCALL_ALLOW_HTTP_TARGETS=true)")
        duration = read.seconds("GCPCALL_LEASE_DURATION_SECONDS", 15.0)
        renew = read.seconds("GCPCALL_LEASE_RENEW_SECONDS", 10.0)
        retry = read.seconds("GCPCALL_LEASE_RETRY_SECONDS", 2.0)
        # client-go's rule: a leader renews before its lease runs out, and retries in between
        if renew >= duration:  # the values in effect, defaults included
            raise SettingsError("GCPCALL_LEASE_RENEW_SECONDS", f"{renew:g}",
                                f"less than GCPCALL_LEASE_DURATION_SECONDS ({duration:g})")
        if retry >= renew:
            raise SettingsError("GCPCALL_LEASE_RETRY_SECONDS", f"{retry:g}",
                                f"less than GCPCALL_LEASE_RENEW_SECONDS ({renew:g})")
        settings = cls(
            cluster_name=read.matching("GCPCALL_CLUSTER_NAME", "default", _CLUSTER,
                                       "1-63 letters, digits or hyphens (no '_')"),
            default_project=read.opt("GCPCALL_PROJECT"),
            default_location=read.opt("GCPCALL_LOCATION"),
            default_service_account=read.opt("GCPCALL_SERVICE_ACCOUNT"),
            identity_mode=read.choice("GCPCALL_IDENTITY_MODE", IdentityMode,
                                      IdentityMode.WORKLOAD_IDENTITY),
            workload_pool=read.opt("GCPCALL_WORKLOAD_POOL"),
            cluster_url=read.opt("GCPCALL_CLUSTER_URL"),
            sts_audience=read.opt("GCPCALL_STS_AUDIENCE"),
            impersonation_delegates=read.emails("GCPCALL_IMPERSONATION_DELEGATES"),
            relay_url=relay_url,
            relay_port=read.port("GCPCALL_RELAY_PORT", 8443),
            relay_address=read.opt("GCPCALL_RELAY_ADDRESS") or "0.0.0.0",  # noqa: S104
            oidc_issuer=read.url("GCPCALL_OIDC_ISSUER", "https://accounts.google.com",
                                 allow_http=True),
            drift_check_seconds=read.seconds("GCPCALL_DRIFT_CHECK_SECONDS", 600.0),
            run_settle_seconds=read.seconds("GCPCALL_RUN_SETTLE_SECONDS", 2.0, zero_ok=True),
            events_per_second=read.seconds("GCPCALL_EVENTS_PER_SECOND", 25.0,
                                           what="a number of events a second"),
            endpoints=endpoints,
            leader_election=read.boolean("GCPCALL_LEADER_ELECTION", False),
            lease_name=read.matching("GCPCALL_LEASE_NAME", "gcpcall-operator", _DNS_SUBDOMAIN,
                                     "a Kubernetes object name (lowercase, digits, '-', '.')"),
            lease_namespace=read.matching("GCPCALL_LEASE_NAMESPACE", pod_namespace() or "default",
                                          _DNS_LABEL, "a Kubernetes namespace name"),
            lease_duration_seconds=duration,
            lease_renew_seconds=renew,
            lease_retry_seconds=retry,
            log_format=read.choice("GCPCALL_LOG_FORMAT", LogFormat, LogFormat.TEXT),
        )
        if warn_unknown:
            warn_unknown_variables(read.env)
        return settings


_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_EMAIL = re.compile(r"^[^@\s,]+@[^@\s,]+$")
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")

# Every variable `Settings.from_env` reads (GCE_METADATA_HOST is google-auth's own name).
KNOWN_VARIABLES = frozenset({
    "GCPCALL_ALLOW_HTTP_TARGETS", "GCPCALL_CLUSTER_NAME", "GCPCALL_CLUSTER_URL",
    "GCPCALL_DRIFT_CHECK_SECONDS", "GCPCALL_EVENTS_PER_SECOND", "GCPCALL_GRPC_INSECURE",
    "GCPCALL_HOST_MAP", "GCPCALL_IAM_CREDENTIALS_ENDPOINT", "GCPCALL_IDENTITY_MODE",
    "GCPCALL_IMPERSONATION_DELEGATES", "GCPCALL_LEADER_ELECTION",
    "GCPCALL_LEASE_DURATION_SECONDS", "GCPCALL_LEASE_NAME", "GCPCALL_LEASE_NAMESPACE",
    "GCPCALL_LEASE_RENEW_SECONDS", "GCPCALL_LEASE_RETRY_SECONDS", "GCPCALL_LOCATION",
    "GCPCALL_LOG_FORMAT", "GCPCALL_OIDC_CERTS_URL", "GCPCALL_OIDC_ISSUER", "GCPCALL_PROJECT",
    "GCPCALL_RELAY_ADDRESS", "GCPCALL_RELAY_PORT", "GCPCALL_RELAY_URL",
    "GCPCALL_RUN_SETTLE_SECONDS", "GCPCALL_SCHEDULER_ENDPOINT", "GCPCALL_SERVICE_ACCOUNT",
    "GCPCALL_STS_AUDIENCE", "GCPCALL_STS_ENDPOINT", "GCPCALL_TASKS_ENDPOINT",
    "GCPCALL_WORKLOAD_POOL",
})

_warned: set[str] = set()  # unknown variables already named in a warning (once a process)


def unknown_variables(env: Mapping[str, str]) -> list[str]:
    """The `GCPCALL_*` variables in `env` that no setting reads, sorted."""
    return sorted(k for k in env if k.startswith("GCPCALL_") and k not in KNOWN_VARIABLES)


def warn_unknown_variables(env: Mapping[str, str]) -> None:
    """One warning line naming the unknown `GCPCALL_*` variables not warned about yet."""
    new = [name for name in unknown_variables(env) if name not in _warned]
    if new:
        _warned.update(new)
        log.warning("unknown settings ignored (misspelt, or from a newer version): %s",
                    ", ".join(new))


def pod_namespace() -> str | None:
    """The namespace of the pod this process runs in (its ServiceAccount mount), if any."""
    try:
        return _SA_NAMESPACE.read_text().strip() or None
    except OSError:
        return None


class _Reader:
    """Reads one variable at a time, refusing a bad value with the variable's name."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def opt(self, name: str) -> str | None:
        value = self.env.get(name, "").strip()
        return value or None

    def _parsed(self, name: str, default: _T, parse: Callable[[str], _T | None],
                allowed: str) -> _T:
        value = self.opt(name)
        if value is None:
            return default
        parsed = parse(value)
        if parsed is None:
            raise SettingsError(name, value, allowed)
        return parsed

    def boolean(self, name: str, default: bool) -> bool:
        def parse(value: str) -> bool | None:
            low = value.lower()
            return True if low in _TRUE else False if low in _FALSE else None

        return self._parsed(name, default, parse, "true or false")

    def seconds(self, name: str, default: float, *, zero_ok: bool = False,
                what: str = "a number of seconds") -> float:
        def parse(value: str) -> float | None:
            try:
                number = float(value)
            except ValueError:
                return None
            if not math.isfinite(number) or number < 0 or (number == 0 and not zero_ok):
                return None
            return number

        bound = "0 or more" if zero_ok else "greater than 0"
        return self._parsed(name, default, parse, f"{what}, {bound} (e.g. {default:g})")

    def port(self, name: str, default: int) -> int:
        def parse(value: str) -> int | None:
            return int(value) if value.isdigit() and int(value) <= 65535 else None

        return self._parsed(name, default, parse, "a port number 0-65535 (0: none)")

    def choice(self, name: str, enum: type[_E], default: _E) -> _E:
        by_lower = {member.value.lower(): member for member in enum}
        return self._parsed(name, default, lambda value: by_lower.get(value.lower()),
                            "one of " + ", ".join(m.value for m in enum))

    def matching(self, name: str, default: str, pattern: re.Pattern[str], allowed: str) -> str:
        return self._parsed(name, default, lambda v: v if pattern.match(v) else None, allowed)

    def url(self, name: str, default: str, *, allow_http: bool, why_http: str = "") -> str:
        want = "an https:// or http:// URL" if allow_http else f"an https:// URL {why_http}"
        return self._parsed(name, default, lambda v: v if _is_url(v, allow_http) else None,
                            f"{want.strip()} with a host")

    def grpc_target(self, name: str, default: str) -> str:
        return self._parsed(name, default, lambda v: None if re.search(r"\s", v) else v,
                            "a gRPC target such as host:port, without spaces")

    def emails(self, name: str) -> tuple[str, ...]:
        def parse(value: str) -> tuple[str, ...] | None:
            items = tuple(item.strip() for item in value.split(",") if item.strip())
            return items if all(_EMAIL.match(item) for item in items) else None

        return self._parsed(name, (), parse, "comma-separated service account emails")

    def host_map(self, name: str) -> dict[str, str]:
        def parse(value: str) -> dict[str, str] | None:
            routes: dict[str, str] = {}
            for pair in (p.strip() for p in value.split(",")):
                if not pair:
                    continue
                host, sep, target = (part.strip() for part in pair.partition("="))
                if not sep or not host or "/" in host or not _is_url(target, True):
                    return None
                routes[host] = target
            return routes

        return self._parsed(name, {}, parse,
                            "comma-separated host=base_url entries, e.g. "
                            "compute.googleapis.com=http://127.0.0.1:8089")



def _is_url(value: str, allow_http: bool) -> bool:
    if re.search(r"[\s\\]", value) or not value.isascii():
        return False
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        return False
    schemes = ("https", "http") if allow_http else ("https",)
    return parts.scheme in schemes and bool(parts.hostname) and "@" not in parts.netloc
