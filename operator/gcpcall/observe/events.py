"""Kubernetes Events a human reads in `kubectl describe`: Created, Updated, DriftCorrected...

Why our own recorder rather than kopf's: events are also posted from the batched status
sync, which runs outside any kopf handler, and one way to post them keeps their wording
and their source (`gcpcall-operator`) the same everywhere. Messages are built by the
callers from spec fields and Google's error text, never from tokens or request bodies.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Coroutine
from typing import Any

from gcpcall.kube import KubeClient, KubeError, ObjectRef

__all__ = ["EventRecorder"]

log = logging.getLogger(__name__)


class EventRecorder:
    """Posts core/v1 Events about our objects; a failure to post is logged, never raised."""

    def __init__(self, kube: KubeClient, component: str = "gcpcall-operator") -> None:
        self.kube = kube
        self.component = component
        self._pending: set[asyncio.Task[None]] = set()

    # Posting runs in the background: an event is for humans, and waiting for it would put
    # an API round trip on every reconcile's path to Ready. The task is returned for the
    # callers that do want to wait.
    def normal(self, ref: ObjectRef, reason: str, message: str) -> asyncio.Task[None]:
        return self._spawn(self._post(ref, "Normal", reason, message))

    def warning(self, ref: ObjectRef, reason: str, message: str) -> asyncio.Task[None]:
        return self._spawn(self._post(ref, "Warning", reason, message))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return task

    async def flush(self) -> None:
        """Wait for the events still being posted (at shutdown)."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

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
