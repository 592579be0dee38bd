"""The relay's parsed specs: one per object generation, parsed once.

Why: every request is checked against the object's spec (its identity, its target), and a
scheduled object is called run after run with the same spec; parsing it on each request
(the cron check, the target's rules, the templates) was a third of the relay's own work
before its call (bench/RESULTS.md, P8). A parsed spec depends only on the object's `spec`,
fixed for one `metadata.generation` of one uid, and on the Defaults (the namespace's
annotations can change between two requests), so it is reused only when both still match.
An invalid spec is not kept: it is refused on every request, as before.

Why a plain dict and not a cache library: one entry per object, replaced in place; the
only policy needed is a bound for a relay of its own, which never hears of deletions.
"""

from __future__ import annotations

from dataclasses import dataclass

from gcpcall.api.gcp_task import GcpTaskSpec, parse_gcp_task
from gcpcall.api.placement import Defaults
from gcpcall.api.scheduled_call import ScheduledCallSpec, parse_scheduled_call
from gcpcall.reconcile.objects import ObjectView

__all__ = ["ParsedSpecs"]


@dataclass(frozen=True, slots=True)
class _Entry:
    generation: int
    defaults: Defaults
    spec: ScheduledCallSpec | GcpTaskSpec


class ParsedSpecs:
    """The last parsed spec of each object, for as long as its generation and defaults hold."""

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self._entries: dict[str, _Entry] = {}

    def parse(self, obj: ObjectView, defaults: Defaults) -> ScheduledCallSpec | GcpTaskSpec:
        """The object's parsed spec; raises InvalidSpec as the parsers do."""
        uid = obj.ref.uid
        entry = self._entries.get(uid)
        if (entry is not None and obj.generation and entry.generation == obj.generation
                and entry.defaults == defaults):
            return entry.spec
        spec: ScheduledCallSpec | GcpTaskSpec = (
            parse_scheduled_call(obj.spec, defaults) if obj.ref.kind == "ScheduledGcpCall"
            else parse_gcp_task(obj.spec, defaults))
        if uid and obj.generation:
            self._entries.pop(uid, None)
            if len(self._entries) >= self.limit:  # the oldest entry goes first
                del self._entries[next(iter(self._entries))]
            self._entries[uid] = _Entry(obj.generation, defaults, spec)
        return spec

    def __len__(self) -> int:
        return len(self._entries)
