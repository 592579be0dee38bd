"""The one status writer: a status patch only when something changed.

Why one place: status is written from kopf handlers and from the batched sync, and both
must agree on what "changed" means, keep the whole `conditions` list (a merge patch
replaces lists), count writes, and remember what they wrote so the next comparison is made
against the newest status rather than a stale watch event.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from gcpcall.api.conditions import status_patch
from gcpcall.kube import KubeClient, KubeError, ObjectRef
from gcpcall.observe.metrics import STATUS_PATCHES

__all__ = ["StatusWriter"]


class StatusWriter:
    """Writes status deltas and remembers the last status written per object uid."""

    def __init__(self, kube: KubeClient) -> None:
        self.kube = kube
        self._last: dict[str, dict[str, Any]] = {}

    def known(self, ref: ObjectRef, observed: Mapping[str, Any] | None) -> dict[str, Any]:
        """The newest status we know: what we last wrote, else what the caller observed."""
        mine = self._last.get(ref.uid)
        if mine is not None:
            return mine
        return dict(observed or {})

    def remember(self, ref: ObjectRef, observed: Mapping[str, Any] | None) -> None:
        """Take an observed status as the newest known, unless we wrote a newer one.

        For objects resumed without a write: the batched sync compares against what is
        known, and an empty base would make its first patch drop every field it does not
        set itself (the Ready condition, the run history).
        """
        if ref.uid not in self._last:
            self._last[ref.uid] = copy.deepcopy(dict(observed or {}))

    async def write(
        self, ref: ObjectRef, current: Mapping[str, Any] | None, desired: Mapping[str, Any]
    ) -> bool:
        """Patch the fields of `desired` that differ; returns whether a write happened."""
        base = self.known(ref, current)
        delta = status_patch(base, desired)
        if not delta:
            return False
        try:
            await self.kube.patch_status(ref, delta)
        except KubeError as e:
            if e.status == 404:  # the object is gone: nothing to report on
                self.forget(ref)
                return False
            raise
        STATUS_PATCHES.labels(ref.kind).inc()
        merged = copy.deepcopy(base)
        for key, value in delta.items():
            if value is None:
                merged.pop(key, None)
            else:  # status_patch makes each patched key exactly desired[key]
                merged[key] = copy.deepcopy(desired[key])
        self._last[ref.uid] = merged
        return True

    def forget(self, ref: ObjectRef) -> None:
        self._last.pop(ref.uid, None)
