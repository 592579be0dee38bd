"""The one small Kubernetes client the operator uses outside kopf's own API access.

Why our own: the reconcilers need a handful of calls kopf does not make for them
(ServiceAccounts and their TokenRequests, namespace annotations, ConfigMap/Secret bodies,
batched status patches from the sync loop). The official clients' API classes import hundreds
of model modules to make these few calls; this module makes them with aiohttp.

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
import json
import logging
import os
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import aiohttp

if TYPE_CHECKING:
    from kubernetes.client import Configuration

__all__ = [
    "Connection",
    "Credentials",
    "KubeClient",
    "KubeConfigError",
    "KubeError",
    "ObjectRef",
    "RefreshingToken",
    "load_connection",
]

log = logging.getLogger(__name__)

GROUP = "gcpcall.dev"
VERSION = "v1alpha1"

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


@dataclass(frozen=True)
class ObjectRef:
    """Which object of ours: enough to patch its status and to post events about it."""

    kind: str  # "ScheduledGcpCall" | "GcpTask"
    plural: str  # "scheduledgcpcalls" | "gcptasks"
    namespace: str
    name: str
    uid: str

    @property
    def api_version(self) -> str:
        return f"{GROUP}/{VERSION}"

    @property
    def path(self) -> str:
        return f"/apis/{GROUP}/{VERSION}/namespaces/{self.namespace}/{self.plural}/{self.name}"


class KubeError(Exception):
    """A non-2xx answer from the API server, with its status and Kubernetes reason."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class KubeClient:
    """Async calls to the API server; one aiohttp session for the operator's lifetime."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._session: aiohttp.ClientSession | None = None

    def _ssl(self) -> ssl.SSLContext | bool:
        if self.conn.insecure:
            return False
        ctx = ssl.create_default_context(cafile=self.conn.ca_path)
        if self.conn.cert_path and self.conn.key_path:
            ctx.load_cert_chain(self.conn.cert_path, self.conn.key_path)
        return ctx

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self._ssl(), limit=64)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=30)
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content_type: str = "application/json",
        params: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        token = self.conn.current_token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body)
        session = self._get_session()
        async with session.request(
            method, self.conn.server + path, data=data, headers=headers, params=params
        ) as resp:
            payload = await resp.read()
            doc: Any = json.loads(payload) if payload else {}
            if resp.status >= 400:
                reason = doc.get("reason", "") if isinstance(doc, dict) else ""
                message = doc.get("message", "") if isinstance(doc, dict) else ""
                raise KubeError(resp.status, reason or resp.reason or "", message)
            return cast(dict[str, Any], doc)

    async def _get(self, path: str) -> dict[str, Any] | None:
        """GET, with None for 404."""
        try:
            return await self.request("GET", path)
        except KubeError as e:
            if e.status == 404:
                return None
            raise

    async def get_object(self, ref: ObjectRef) -> dict[str, Any] | None:
        """One of our objects by name (whatever its uid now is); None when absent."""
        return await self._get(ref.path)

    async def list_objects(self, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """Every object of one of our kinds (in `namespace`, or cluster-wide)."""
        where = f"/namespaces/{namespace}" if namespace else ""
        doc = await self.request("GET", f"/apis/{GROUP}/{VERSION}{where}/{plural}")
        return list(doc.get("items") or [])

    async def get_service_account(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get(f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}")

    async def get_namespace(self, name: str) -> dict[str, Any] | None:
        return await self._get(f"/api/v1/namespaces/{name}")

    async def get_configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get(f"/api/v1/namespaces/{namespace}/configmaps/{name}")

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get(f"/api/v1/namespaces/{namespace}/secrets/{name}")

    async def create_token(
        self, namespace: str, name: str, audiences: list[str], seconds: int
    ) -> tuple[str, str]:
        """TokenRequest for a ServiceAccount: (token, expirationTimestamp)."""
        doc = await self.request(
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
            body={
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"audiences": audiences, "expirationSeconds": seconds},
            },
        )
        status = doc.get("status", {})
        return str(status.get("token", "")), str(status.get("expirationTimestamp", ""))

    async def patch_status(
        self, ref: ObjectRef, status: Mapping[str, Any], *, resource_version: str | None = None
    ) -> dict[str, Any]:
        """Merge-patch the status subresource (lists such as conditions are replaced whole).

        The uid precondition makes a patch for a deleted-and-recreated object fail (409)
        instead of landing on the new object; `resource_version`, when given, makes it
        fail (409) if anyone wrote the object since that version.
        """
        meta: dict[str, Any] = {"uid": ref.uid}
        if resource_version:
            meta["resourceVersion"] = resource_version
        return await self.request(
            "PATCH",
            ref.path + "/status",
            body={"metadata": meta, "status": dict(status)},
            content_type="application/merge-patch+json",
        )

    async def patch_json(self, ref: ObjectRef, ops: list[dict[str, Any]]) -> None:
        """A JSON patch (RFC 6902) of the object: `test` operations make it conditional."""
        await self.request("PATCH", ref.path, body=ops, content_type="application/json-patch+json")

    async def delete_object(self, ref: ObjectRef) -> bool:
        """Delete this object (this uid only: a new object of the same name is spared).
        False when it was already gone or is another object by now."""
        try:
            await self.request(
                "DELETE", ref.path,
                body={"kind": "DeleteOptions", "apiVersion": "v1",
                      "preconditions": {"uid": ref.uid}},
            )
        except KubeError as e:
            if e.status in (404, 409):
                return False
            raise
        return True

    def _lease_path(self, namespace: str, name: str = "") -> str:
        base = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        return f"{base}/{name}" if name else base

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get(self._lease_path(namespace, name))

    async def create_lease(self, namespace: str, lease: Mapping[str, Any]) -> dict[str, Any]:
        """Create a coordination.k8s.io/v1 Lease (409 when someone else just did)."""
        return await self.request("POST", self._lease_path(namespace), body=dict(lease))

    async def replace_lease(self, namespace: str, name: str,
                            lease: Mapping[str, Any]) -> dict[str, Any]:
        """Replace a Lease; its metadata.resourceVersion makes it conditional (409)."""
        return await self.request("PUT", self._lease_path(namespace, name), body=dict(lease))

    async def create_event(self, namespace: str, event: Mapping[str, Any]) -> None:
        """Post a core/v1 Event."""
        await self.request("POST", f"/api/v1/namespaces/{namespace}/events", body=dict(event))
