"""Where the API server is and how to authenticate to it: one `Connection`.

Why the official client's config loader all the same (`load_connection`): where the API
server is and how to authenticate is what that library gets right and a hand parser does
not: every kubeconfig rule (merged $KUBECONFIG paths, embedded or relative certificates),
exec credential plugins (gke-gcloud-auth-plugin, aws-iam-authenticator), auth providers
(oidc, gcp) and the in-cluster ServiceAccount. kopf imports the same package whenever it is
installed (its fallback login), so it costs the operator nothing more than being installed.
Its token is kept by `RefreshingToken`: an exec plugin's token is fetched again before it
expires, and a token file (the kubelet rotates the in-cluster one) is read again every
minute, in a worker thread, so that a request on the event loop never waits for a plugin
while the current token is still good. kopf's login (`handlers/startup.py: login`) uses the
same `Connection`, with the time to log in again.
"""

from __future__ import annotations

import datetime
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kubernetes.client import Configuration

__all__ = ["Connection", "Credentials", "KubeConfigError", "RefreshingToken", "load_connection"]

log = logging.getLogger(__name__)

_SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
# A token with no stated expiry (a token file, a static token) is read again this often:
# the kubelet rotates the in-cluster one (client-go re-reads it every minute too).
_REREAD_SECONDS = 60.0
# An expiring token is fetched again at most this long before it expires (the official
# client's skew), and at the latest half-way through its life.
_MAX_EARLY_SECONDS = 300.0
_RETRY_SECONDS = 5.0  # after a failed fetch, the current token is used this long


class KubeConfigError(Exception):
    """No usable connection: a kubeconfig or in-cluster setup the client cannot use."""


@dataclass(frozen=True)
class Credentials:
    """One fetch of the bearer token: the token and when it expires (POSIX s, or None)."""

    token: str | None
    expires_at: float | None = None


class RefreshingToken:
    """A bearer token that is fetched again before it expires.

    Between `refresh_at()` and the expiry the current token is still returned and one
    worker thread fetches the next; only a caller that finds the token expired waits for
    the fetch. A token with no stated expiry is fetched again in the background every
    `_REREAD_SECONDS`. A failed fetch keeps the current token and is retried
    `_RETRY_SECONDS` later (the API server's 401 says so meanwhile).
    """

    def __init__(self, fetch: Callable[[], Credentials], *,
                 clock: Callable[[], float] = time.time) -> None:
        self._fetch = fetch
        self._clock = clock
        self._lock = threading.Lock()  # one fetch at a time
        self._flag = threading.Lock()  # guards _refreshing
        self._refreshing = False
        self._retry_at = 0.0
        self._current = fetch()
        self._fetched_at = clock()
        self.fetches = 1

    @property
    def expires_at(self) -> float | None:
        return self._current.expires_at

    def refresh_at(self) -> float:
        """When the next fetch is due (POSIX seconds)."""
        expires = self._current.expires_at
        if expires is None:
            return self._fetched_at + _REREAD_SECONDS
        early = min(_MAX_EARLY_SECONDS, max(expires - self._fetched_at, 0.0) / 2)
        return expires - early

    def token(self) -> str | None:
        now = self._clock()
        if now < self.refresh_at() or now < self._retry_at:
            return self._current.token
        expires = self._current.expires_at
        if expires is not None and now >= expires:
            self._refresh()  # nothing good to hand out: wait for the fetch
        else:
            self._refresh_in_background()
        return self._current.token

    def _refresh(self) -> None:
        with self._lock:
            if self._clock() < self.refresh_at():
                return  # another caller fetched it meanwhile
            try:
                fresh = self._fetch()
                if fresh.expires_at is not None and fresh.expires_at <= self._clock():
                    raise KubeConfigError("the credential fetched has expired already")
            except Exception as e:  # the library raises many kinds; all mean "not now"
                self._retry_at = self._clock() + _RETRY_SECONDS
                log.warning("refreshing the Kubernetes API credentials failed; retrying in "
                            "%.0f s: %s: %s", _RETRY_SECONDS, type(e).__name__, e)
                return
            self._current, self._fetched_at = fresh, self._clock()
            self.fetches += 1

    def _refresh_in_background(self) -> None:
        with self._flag:
            if self._refreshing:
                return
            self._refreshing = True

        def run() -> None:
            try:
                self._refresh()
            finally:
                with self._flag:
                    self._refreshing = False

        threading.Thread(target=run, name="kube-credentials", daemon=True).start()


@dataclass(frozen=True)
class Connection:
    """Where the API server is and how we authenticate (token or client certificate).

    `credentials`: a token that is fetched again (`load_connection`); else `token_path` (read
    on every use) or the static `token`.
    """

    server: str
    ca_path: str | None = None
    insecure: bool = False
    token: str | None = None
    token_path: str | None = None
    cert_path: str | None = None
    key_path: str | None = None
    default_namespace: str | None = None
    credentials: RefreshingToken | None = field(default=None, repr=False, compare=False)

    def current_token(self) -> str | None:
        if self.credentials is not None:
            return self.credentials.token()
        if self.token_path:
            return Path(self.token_path).read_text().strip()
        return self.token

    def login_again_at(self) -> datetime.datetime | None:
        """When a login made with this token should be made again (kopf's `expiration`):
        the refresh time of a token that expires; None for one that states no expiry."""
        if self.credentials is None or self.credentials.expires_at is None:
            return None
        return datetime.datetime.fromtimestamp(self.credentials.refresh_at(), datetime.UTC)


def _bearer(cfg: Configuration) -> str | None:
    """The token the library put in its configuration ("Bearer <token>"), without "Bearer"."""
    value = cfg.api_key.get("BearerToken") or cfg.api_key.get("authorization")
    if not value:
        return None
    scheme, _, token = str(value).partition(" ")
    if not token:
        return scheme
    if scheme.lower() != "bearer":
        raise KubeConfigError(f"kubeconfig credentials of type {scheme!r} are not supported "
                              "(a token, an exec plugin, an auth provider or a certificate)")
    return token.strip()


def _from_kubeconfig(paths: str, context: str | None) -> Connection:
    # Imported here: only a process that connects pays for the library (kopf would too).
    from kubernetes.client import Configuration
    from kubernetes.config import ConfigException
    from kubernetes.config.kube_config import KubeConfigLoader, KubeConfigMerger

    try:
        # (the library's config functions are untyped: each call is marked below)
        merged = KubeConfigMerger(paths)  # type: ignore[no-untyped-call]
        if merged.config is None:
            raise KubeConfigError(f"no kubeconfig at {paths}")
        # what the library's load_kube_config does, keeping the loader to read its expiry
        loader = KubeConfigLoader(config_dict=merged.config, active_context=context,
                                  config_base_path=None)  # type: ignore[no-untyped-call]
    except (ConfigException, OSError, KeyError, ValueError) as e:
        raise KubeConfigError(f"kubeconfig {paths}: {e}") from None
    cfg = Configuration()

    def fetch() -> Credentials:
        # runs an exec plugin, reads a tokenFile again, refreshes an auth provider's token
        loader.load_and_set(cfg)  # type: ignore[no-untyped-call]
        # The one attribute read beyond the library's functions: where it keeps an exec
        # plugin's (or gcp auth provider's) expiry for its own refresh hook.
        expiry = getattr(loader, "expiry", None)
        expires = expiry.timestamp() if isinstance(expiry, datetime.datetime) else None
        return Credentials(_bearer(cfg), expires)

    try:
        credentials = RefreshingToken(fetch)
    except ConfigException as e:
        raise KubeConfigError(f"kubeconfig {paths}: {e}") from None
    namespace = (loader.current_context.get("context") or {}).get("namespace")
    return Connection(
        server=cfg.host.rstrip("/"),
        ca_path=cfg.ssl_ca_cert,
        insecure=not cfg.verify_ssl,
        cert_path=cfg.cert_file,
        key_path=cfg.key_file,
        default_namespace=namespace,
        credentials=credentials,
    )


def _in_cluster() -> Connection:
    from kubernetes.client import Configuration
    from kubernetes.config import ConfigException, load_incluster_config

    cfg = Configuration()

    def fetch() -> Credentials:
        # reads the token file again (the library's own refresh hook is not used: we re-read)
        load_incluster_config(  # type: ignore[no-untyped-call]
            client_configuration=cfg, try_refresh_token=False)
        return Credentials(_bearer(cfg), None)

    try:
        credentials = RefreshingToken(fetch)
    except ConfigException as e:
        raise KubeConfigError(f"in-cluster configuration: {e}") from None
    namespace_file = _SA_DIR / "namespace"
    namespace = namespace_file.read_text().strip() if namespace_file.exists() else None
    return Connection(server=cfg.host, ca_path=cfg.ssl_ca_cert, default_namespace=namespace,
                      credentials=credentials)


def load_connection(kubeconfig: str | None = None, *, context: str | None = None
                    ) -> Connection:
    """From `kubeconfig` (or $KUBECONFIG, which may list several files), else the in-cluster
    ServiceAccount, else ~/.kube/config. Raises `KubeConfigError` when none is usable."""
    paths = kubeconfig or os.environ.get("KUBECONFIG")
    if not paths and (_SA_DIR / "token").exists():
        return _in_cluster()
    return _from_kubeconfig(paths or str(Path.home() / ".kube" / "config"), context)
