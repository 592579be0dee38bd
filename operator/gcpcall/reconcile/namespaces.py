"""The `gcpcall.dev/project` and `gcpcall.dev/location` annotations of namespaces.

Why cached: every reconcile resolves its defaults from its namespace's annotations; a GET
per reconcile would double the API server's work in a create storm, and a namespace's
annotations change rarely. A change is seen within `ttl` seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gcpcall.clock import SYSTEM, Clock
from gcpcall.kube import KubeClient

__all__ = ["NamespaceDefaults"]


@dataclass
class NamespaceDefaults:
    kube: KubeClient
    clock: Clock = SYSTEM
    ttl: float = 30.0
    _cache: dict[str, tuple[float, dict[str, str]]] = field(default_factory=dict)

    async def annotations(self, namespace: str) -> dict[str, str]:
        hit = self._cache.get(namespace)
        if hit and self.clock.monotonic() - hit[0] < self.ttl:
            return hit[1]
        doc: dict[str, Any] | None = await self.kube.get_namespace(namespace)
        annotations = dict(((doc or {}).get("metadata") or {}).get("annotations") or {})
        self._cache[namespace] = (self.clock.monotonic(), annotations)
        return annotations
