"""Inputs a spec refers to but does not contain: a body kept in a ConfigMap or Secret.

Why a separate step: parsing (api/) is pure, reading Kubernetes is I/O. A missing object
or key is a dependency that is not there yet (Argo CD or External Secrets may create it a
moment later), not a bad spec: `BodySourceMissing` makes the reconcile retry with backoff,
and the object converges by itself once it appears. A Secret the operator may not read
says which permission the namespace must grant (the operator has no cluster-wide access
to Secrets, on purpose); that too may be granted later, so it is retried the same way.
"""

from __future__ import annotations

import base64

from gcpcall.api.target import Target, check_request_size
from gcpcall.kube import KubeClient, KubeError

__all__ = ["BodySourceMissing", "resolve_body"]


class BodySourceMissing(Exception):
    """The ConfigMap/Secret (or its key) a body names is absent or unreadable for now.
    `forbidden`: it exists for all we know, but the operator may not read it."""

    def __init__(self, field: str, message: str, *, forbidden: bool = False) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.forbidden = forbidden


async def resolve_body(target: Target, namespace: str, kube: KubeClient) -> bytes | None:
    """The body bytes when the spec keeps them in a ConfigMap/Secret; None otherwise."""
    source = target.body.source if target.body is not None else None
    if source is None:
        return None
    field = "spec.target.body." + ("fromConfigMap" if source.kind == "ConfigMap" else "fromSecret")
    try:
        if source.kind == "ConfigMap":
            doc = await kube.get_configmap(namespace, source.name)
        else:
            doc = await kube.get_secret(namespace, source.name)
    except KubeError as e:
        if e.status == 403:
            raise BodySourceMissing(
                field,
                f"the operator may not read {source.kind} {source.name!r}: grant its "
                f"ServiceAccount 'get' on it with a Role and RoleBinding in {namespace!r}",
                forbidden=True,
            ) from None
        raise
    if doc is None:
        raise BodySourceMissing(field, f"{source.kind} {source.name!r} does not exist (yet); "
                                       "the job is made as soon as it does")
    data = doc.get("data") or {}
    binary = doc.get("binaryData") or {}
    if source.key in data:
        raw = data[source.key]
        body = base64.b64decode(raw) if source.kind == "Secret" else str(raw).encode()
    elif source.key in binary:
        body = base64.b64decode(binary[source.key])
    else:
        raise BodySourceMissing(
            field + ".key", f"{source.kind} {source.name!r} has no key {source.key!r} (yet)"
        )
    check_request_size(target, body, field)
    return body
