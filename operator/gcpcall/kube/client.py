"""The one small Kubernetes client the operator uses outside kopf's own API access.

Why our own: the reconcilers need a handful of calls kopf does not make for them
(ServiceAccounts and their TokenRequests, namespace annotations, ConfigMap/Secret bodies,
batched status patches from the sync loop). The official clients' API classes import hundreds
of model modules to make these few calls; this module makes them with aiohttp.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import aiohttp

from gcpcall.kube.connection import Connection

__all__ = ["GROUP", "VERSION", "KubeClient", "KubeError", "ObjectRef"]

GROUP = "gcpcall.dev"
VERSION = "v1alpha1"
_POOL = 16  # connections to the API server at most


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
            # A small pool: the API server is one host, and 16 requests in flight keep it
            # busy while the others wait for a free connection. With 64, a create storm of
            # 10,000 objects left 64 TLS connections open at rest, each with its own read
            # buffer; with 16 the storm was no slower (bench/RESULTS.md, P4).
            connector = aiohttp.TCPConnector(ssl=self._ssl(), limit=_POOL)
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
            try:
                doc: Any = json.loads(payload) if payload else {}
            except ValueError:
                # An API server that is starting (or a proxy before it) can answer in plain
                # text: an error of its own, or a 5xx (transient to the classifier) if it
                # claimed success, never a JSONDecodeError for the caller to trip on.
                text = payload[:200].decode(errors="replace").strip()
                if resp.status >= 400:
                    raise KubeError(resp.status, resp.reason or "", text) from None
                raise KubeError(502, "InvalidResponse",
                                f"a {resp.status} answer that is not JSON: {text}") from None
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
