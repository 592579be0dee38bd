"""Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection does.

Why: with more than one replica, only one may run the handlers and the background loops
(two would sync the same objects and make Google writes twice); kopf's peering freezes
handlers but not our loops. The protocol is client-go's: a replica takes the Lease when it
is free or its holder stopped renewing it for `leaseDurationSeconds`, renews it every
`renew` seconds, and a leader that cannot renew within the lease duration stops acting at
once: the process exits and Kubernetes starts it again, as a standby (the proven way:
nothing half-stopped keeps running). Standbys keep trying every `retry` seconds.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from gcpcall.kube import KubeClient, KubeError

__all__ = ["Elector", "LeaseSettings"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeaseSettings:
    name: str = "gcpcall-operator"
    namespace: str = "default"
    duration: float = 15.0
    renew: float = 10.0
    retry: float = 2.0


def _micro(when: datetime.datetime) -> str:
    return when.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(value: Any) -> datetime.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


class Elector:
    """Acquires and keeps the Lease; `lost` is called (once) when leadership ends."""

    def __init__(self, kube: KubeClient, lease: LeaseSettings, *,
                 identity: str | None = None,
                 now: Callable[[], datetime.datetime] | None = None) -> None:
        self.kube = kube
        self.lease = lease
        self.identity = identity or f"{os.environ.get('HOSTNAME') or socket.gethostname()}_" \
                                    f"{uuid.uuid4().hex[:8]}"
        self._now = now or (lambda: datetime.datetime.now(datetime.UTC))

    async def _try(self) -> bool:
        """One attempt to take or renew the Lease; True when we hold it now."""
        ns, name = self.lease.namespace, self.lease.name
        now = self._now()
        doc = await self.kube.get_lease(ns, name)
        spec = {"holderIdentity": self.identity,
                "leaseDurationSeconds": int(self.lease.duration), "renewTime": _micro(now)}
        if doc is None:
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": name, "namespace": ns},
                    "spec": {**spec, "acquireTime": _micro(now), "leaseTransitions": 0}}
            try:
                await self.kube.create_lease(ns, body)
            except KubeError as e:
                if e.status == 409:
                    return False
                raise
            return True
        current = doc.get("spec") or {}
        holder = current.get("holderIdentity")
        renewed = _parse(current.get("renewTime"))
        duration = float(current.get("leaseDurationSeconds") or self.lease.duration)
        expired = renewed is None or renewed + datetime.timedelta(seconds=duration) < now
        if holder and holder != self.identity and not expired:
            return False
        new_spec = dict(current)
        new_spec.update(spec)
        if holder != self.identity:
            new_spec["acquireTime"] = _micro(now)
            new_spec["leaseTransitions"] = int(current.get("leaseTransitions") or 0) + 1
        doc["spec"] = new_spec
        try:
            await self.kube.replace_lease(ns, name, doc)  # conditional on its resourceVersion
        except KubeError as e:
            if e.status == 409:
                return False
            raise
        return True

    async def acquire(self) -> None:
        """Wait until this replica holds the Lease."""
        log.info("waiting for the lease %s/%s as %s", self.lease.namespace, self.lease.name,
                 self.identity)
        while True:
            try:
                if await self._try():
                    log.info("this replica leads (lease %s/%s)", self.lease.namespace,
                             self.lease.name)
                    return
            except (KubeError, OSError) as e:
                log.warning("lease %s/%s: %s", self.lease.namespace, self.lease.name, e)
            await asyncio.sleep(self.lease.retry)

    async def keep(self, lost: Callable[[], Awaitable[None] | None]) -> None:
        """Renew every `renew` seconds; if no renewal succeeds within the lease duration
        (or another replica holds the Lease), call `lost` and return."""
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(self.lease.renew if loop.time() - last < self.lease.renew
                                else self.lease.retry)
            try:
                held = await self._try()
            except (KubeError, OSError) as e:
                log.warning("renewing the lease: %s", e)
                held = None
            if held:
                last = loop.time()
                continue
            if held is False or loop.time() - last >= self.lease.duration:
                log.error("this replica lost the lease %s/%s; stopping",
                          self.lease.namespace, self.lease.name)
                result = lost()
                if result is not None:
                    await result
                return
