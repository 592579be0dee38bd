"""Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection does.

Why: with more than one replica, only one may run the handlers and the background loops
(two would sync the same objects and make Google writes twice); kopf's peering freezes
handlers but not our loops. The protocol is client-go's: a replica takes the Lease when it
is free or its holder stopped renewing it for `duration` seconds; the leader renews it
every `retry` seconds, and a leader that has not renewed for `renew` seconds (client-go's
renew deadline, shorter than the duration) stops acting at once: the process exits and
Kubernetes starts it again, as a standby (the proven way: nothing half-stopped keeps
running). The margin between the deadline and the duration is what keeps two leaders from
acting at once: the old one has stopped before a standby may take the Lease. Standbys try
every `retry` seconds.
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

from gcpcall.api.observed import parse_time
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
        return parse_time(value)
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

    async def release(self) -> None:
        """Give the Lease up on a graceful stop, as client-go's ReleaseOnCancel does: the
        holder is cleared and the duration set to 1 s, so a standby leads within its retry
        period instead of waiting out the lease. Best effort: a failure only means the
        standby waits for the lease to expire."""
        ns, name = self.lease.namespace, self.lease.name
        try:
            doc = await self.kube.get_lease(ns, name)
            spec = dict((doc or {}).get("spec") or {})
            if doc is None or spec.get("holderIdentity") != self.identity:
                return
            spec.pop("holderIdentity", None)
            spec["leaseDurationSeconds"] = 1
            spec["renewTime"] = _micro(self._now())
            doc["spec"] = spec
            await self.kube.replace_lease(ns, name, doc)
            log.info("released the lease %s/%s", ns, name)
        except (KubeError, OSError) as e:
            log.warning("releasing the lease %s/%s: %s", ns, name, e)

    async def keep(self, lost: Callable[[], Awaitable[None] | None]) -> None:
        """Renew every `retry` seconds; if no renewal succeeds for `renew` seconds (or
        another replica holds the Lease), call `lost` and return."""
        loop = asyncio.get_running_loop()
        last = loop.time()  # when the last successful renewal started (the conservative end)
        while True:
            await asyncio.sleep(self.lease.retry)
            started = loop.time()
            try:
                held = await asyncio.wait_for(self._try(), timeout=self.lease.renew)
            except (KubeError, OSError, TimeoutError) as e:
                log.warning("renewing the lease: %s", e or "timed out")
                held = None
            if held:
                last = started
                continue
            if held is False or loop.time() - last >= self.lease.renew:
                log.error("this replica lost the lease %s/%s; stopping",
                          self.lease.namespace, self.lease.name)
                result = lost()
                if result is not None:
                    await result
                return
