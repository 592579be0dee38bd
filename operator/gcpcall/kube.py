"""The one small Kubernetes client the operator uses outside kopf's own API access.

Why our own: the reconcilers need a handful of calls kopf does not make for them
(ServiceAccounts and their TokenRequests, namespace annotations, ConfigMap/Secret bodies,
batched status patches from the sync loop). The official clients import hundreds of model
modules (tens of MB of RSS, P4) to make these few calls; this module makes them with aiohttp
and the same connection settings kopf logs in with (`load_connection`).
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import aiohttp
import yaml

__all__ = ["Connection", "KubeClient", "KubeError", "ObjectRef", "load_connection"]

GROUP = "gcpcall.dev"
VERSION = "v1alpha1"

_SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@dataclass(frozen=True)
class Connection:
    """Where the API server is and how we authenticate (token or client certificate)."""

    server: str
    ca_path: str | None = None
    insecure: bool = False
    token: str | None = None
    token_path: str | None = None  # in-cluster: re-read, the kubelet rotates it
    cert_path: str | None = None
    key_path: str | None = None
    default_namespace: str | None = None

    def current_token(self) -> str | None:
        if self.token_path:
            return Path(self.token_path).read_text().strip()
        return self.token


def _materialize(data_b64: str, suffix: str) -> str:
    """Write base64 kubeconfig data (CA, cert, key) to a private temp file for ssl."""
    fd, path = tempfile.mkstemp(prefix="gcpcall-", suffix=suffix)
    with os.fdopen(fd, "wb") as f:
        f.write(base64.b64decode(data_b64))
    return path


def load_connection(kubeconfig: str | None = None) -> Connection:
    """From `kubeconfig` (or $KUBECONFIG), else the in-cluster ServiceAccount."""
    path = kubeconfig or os.environ.get("KUBECONFIG")
    if not path and (_SA_DIR / "token").exists():
        host = os.environ["KUBERNETES_SERVICE_HOST"]
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if ":" in host:
            host = f"[{host}]"
        return Connection(
            server=f"https://{host}:{port}",
            ca_path=str(_SA_DIR / "ca.crt"),
            token_path=str(_SA_DIR / "token"),
            default_namespace=(_SA_DIR / "namespace").read_text().strip(),
        )
    if not path:
        path = str(Path.home() / ".kube" / "config")
    doc = yaml.safe_load(Path(path).read_text())
    ctx_name = doc.get("current-context")
    contexts = {c["name"]: c["context"] for c in doc.get("contexts", [])}
    ctx = contexts[ctx_name] if ctx_name else next(iter(contexts.values()))
    cluster = {c["name"]: c["cluster"] for c in doc.get("clusters", [])}[ctx["cluster"]]
    user = {u["name"]: u["user"] for u in doc.get("users", [])}.get(ctx.get("user"), {})
    base = Path(path).parent

    def file_or_data(file_key: str, data_key: str, section: Mapping[str, Any]) -> str | None:
        if section.get(data_key):
            return _materialize(section[data_key], ".pem")
        if section.get(file_key):
            return str(base / section[file_key])
        return None

    token = user.get("token")
    if not token and user.get("tokenFile"):
        token = (base / user["tokenFile"]).read_text().strip()
    return Connection(
        server=cluster["server"].rstrip("/"),
        ca_path=file_or_data("certificate-authority", "certificate-authority-data", cluster),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        token=token,
        cert_path=file_or_data("client-certificate", "client-certificate-data", user),
        key_path=file_or_data("client-key", "client-key-data", user),
        default_namespace=ctx.get("namespace"),
    )


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
