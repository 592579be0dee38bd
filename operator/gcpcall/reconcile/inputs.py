"""Inputs a spec refers to but does not contain: a body kept in a ConfigMap or Secret.

Why a separate step: parsing (api/) is pure, reading Kubernetes is I/O. A missing object or
key is the user's to fix, so it is reported as InvalidSpec naming the field; a Secret the
operator may not read says which permission the namespace must grant (the operator has no
cluster-wide access to Secrets, on purpose).
"""

from __future__ import annotations

import base64

from gcpcall.api.errors import InvalidSpec
from gcpcall.api.target import Target, check_request_size
from gcpcall.kube import KubeClient, KubeError

__all__ = ["resolve_body"]


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
            raise InvalidSpec(
                field,
                f"the operator may not read {source.kind} {source.name!r}: grant its "
                f"ServiceAccount 'get' on it with a Role and RoleBinding in {namespace!r}",
            ) from None
        raise
    if doc is None:
        raise InvalidSpec(field, f"{source.kind} {source.name!r} does not exist")
    data = doc.get("data") or {}
    binary = doc.get("binaryData") or {}
    if source.key in data:
        raw = data[source.key]
        body = base64.b64decode(raw) if source.kind == "Secret" else str(raw).encode()
    elif source.key in binary:
        body = base64.b64decode(binary[source.key])
    else:
        raise InvalidSpec(
            field + ".key", f"{source.kind} {source.name!r} has no key {source.key!r}"
        )
    check_request_size(target, body, field)
    return body
