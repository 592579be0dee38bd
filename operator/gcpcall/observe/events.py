"""Kubernetes Events a human reads in `kubectl describe`: Created, Updated, DriftCorrected...

Why our own recorder rather than kopf's: events are also posted from the batched status
sync, which runs outside any kopf handler, and one way to post them keeps their wording
and their source (`gcpcall-operator`) the same everywhere. Messages are built by the
callers from spec fields and Google's error text, never from tokens or request bodies.
"""

from __future__ import annotations

import datetime
import logging

from gcpcall.kube import KubeClient, KubeError, ObjectRef

__all__ = ["EventRecorder"]

log = logging.getLogger(__name__)


class EventRecorder:
    """Posts core/v1 Events about our objects; a failure to post is logged, never raised."""

    def __init__(self, kube: KubeClient, component: str = "gcpcall-operator") -> None:
        self.kube = kube
        self.component = component

    async def normal(self, ref: ObjectRef, reason: str, message: str) -> None:
        await self._post(ref, "Normal", reason, message)

    async def warning(self, ref: ObjectRef, reason: str, message: str) -> None:
        await self._post(ref, "Warning", reason, message)

    async def _post(self, ref: ObjectRef, type_: str, reason: str, message: str) -> None:
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{ref.name}.", "namespace": ref.namespace},
            "involvedObject": {
                "apiVersion": ref.api_version,
                "kind": ref.kind,
                "name": ref.name,
                "namespace": ref.namespace,
                "uid": ref.uid,
            },
            "reason": reason,
            "message": message[:1024],
            "type": type_,
            "source": {"component": self.component},
            "reportingComponent": self.component,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self.kube.request(
                "POST", f"/api/v1/namespaces/{ref.namespace}/events", body=body
            )
        except (KubeError, OSError) as e:
            log.warning("could not post event %s for %s/%s: %s", reason, ref.namespace, ref.name, e)
