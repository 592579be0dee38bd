"""Where the API server is and how to authenticate to it: one `Connection`.

`load_connection` reads the kubeconfig (`kube.kubeconfig`: merged $KUBECONFIG paths,
embedded or relative certificates, token files, exec credential plugins such as
gke-gcloud-auth-plugin) or the in-cluster ServiceAccount. Its token is kept by
`RefreshingToken`: an exec plugin's token is fetched again before it expires, and a token
file (the kubelet rotates the in-cluster one) is read again every minute, in a worker
thread, so that a request on the event loop never waits for a plugin while the current
token is still good. kopf's login (`handlers/startup.py: login`) uses the same
`Connection`, with the time to log in again.
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

from gcpcall.kube.kubeconfig import KubeConfigError, read_kubeconfig, run_exec, write_private

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

    `credentials`: a token that is fetched again (`load_connection`); else the static
    `token`.
    """

    server: str
    ca_path: str | None = None
    insecure: bool = False
    token: str | None = None
    cert_path: str | None = None
    key_path: str | None = None
    default_namespace: str | None = None
    credentials: RefreshingToken | None = field(default=None, repr=False, compare=False)

    def current_token(self) -> str | None:
        if self.credentials is not None:
            return self.credentials.token()
        return self.token

    def login_again_at(self) -> datetime.datetime | None:
        """When a login made with this token should be made again (kopf's `expiration`):
        the refresh time of a token that expires; None for one that states no expiry."""
        if self.credentials is None or self.credentials.expires_at is None:
            return None
        return datetime.datetime.fromtimestamp(self.credentials.refresh_at(), datetime.UTC)


def _from_kubeconfig(paths: str, context: str | None) -> Connection:
    config = read_kubeconfig(paths, context)
    if config.exec_config is not None:
        first = run_exec(config)
        cert_path, key_path = config.cert_path, config.key_path
        if first.cert_pem and first.key_pem:
            # a plugin's client certificate: used as first issued (TLS is set up once)
            cert_path = write_private(first.cert_pem, "client.crt")
            key_path = write_private(first.key_pem, "client.key")
        fetched = [first]

        def fetch() -> Credentials:
            # the first fetch is the run above; later ones run the plugin again
            credential = fetched.pop() if fetched else run_exec(config)
            return Credentials(credential.token, credential.expires_at)

        return Connection(server=config.server, ca_path=config.ca_path,
                          insecure=config.insecure, cert_path=cert_path, key_path=key_path,
                          default_namespace=config.namespace,
                          credentials=RefreshingToken(fetch))
    credentials = None
    if config.token_path is not None and not config.token:
        credentials = _token_file(Path(config.token_path), "kubeconfig tokenFile")
    return Connection(server=config.server, ca_path=config.ca_path, insecure=config.insecure,
                      token=config.token, cert_path=config.cert_path, key_path=config.key_path,
                      default_namespace=config.namespace, credentials=credentials)


def _in_cluster() -> Connection:
    """As client-go's `rest.InClusterConfig`: the Service's address from the environment,
    the ServiceAccount's CA and token (read again every minute: the kubelet rotates it)."""
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    port = os.environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise KubeConfigError("in-cluster configuration: KUBERNETES_SERVICE_HOST and "
                              "KUBERNETES_SERVICE_PORT are not set")
    ca = _SA_DIR / "ca.crt"
    namespace_file = _SA_DIR / "namespace"
    namespace = namespace_file.read_text().strip() if namespace_file.exists() else None
    return Connection(server=f"https://{_host(host)}:{port}",
                      ca_path=str(ca) if ca.exists() else None,
                      default_namespace=namespace,
                      credentials=_token_file(_SA_DIR / "token", "in-cluster token"))


def _token_file(path: Path, what: str) -> RefreshingToken:
    """A token kept in a file (a kubeconfig's `tokenFile`, the ServiceAccount's token that
    the kubelet rotates): read now, and again every minute off the event loop."""

    def read() -> Credentials:
        try:
            return Credentials(path.read_text().strip() or None)
        except OSError as e:
            raise KubeConfigError(f"{what} {path}: {e}") from None

    return RefreshingToken(read)


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def load_connection(kubeconfig: str | None = None, *, context: str | None = None
                    ) -> Connection:
    """From `kubeconfig` (or $KUBECONFIG, which may list several files), else the in-cluster
    ServiceAccount, else ~/.kube/config. Raises `KubeConfigError` when none is usable."""
    paths = kubeconfig or os.environ.get("KUBECONFIG")
    if not paths and (_SA_DIR / "token").exists():
        return _in_cluster()
    return _from_kubeconfig(paths or str(Path.home() / ".kube" / "config"), context)
