"""Prometheus metrics: what the operator did and what Google answered.

Why here: metrics are read by people running the operator; names and labels are part of its
interface, so they are declared in one place. Labels never carry tokens or request bodies.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

__all__ = [
    "EVENTS_DROPPED", "GOOGLE_CALLS", "RECONCILES", "STATUS_PATCHES", "SYNC_DURATION",
    "SYNC_LISTS",
]

RECONCILES = Counter(
    "gcpcall_reconciles_total", "Reconciles by kind and result", ["kind", "result"]
)
GOOGLE_CALLS = Counter(
    "gcpcall_google_calls_total", "Google API calls by service, method and code",
    ["service", "method", "code"],
)
SYNC_DURATION = Histogram(
    "gcpcall_sync_duration_seconds", "Duration of one batched status sync of a group", ["kind"]
)
SYNC_LISTS = Counter("gcpcall_sync_lists_total", "Batched List calls made by the sync", ["kind"])
STATUS_PATCHES = Counter(
    "gcpcall_status_patches_total", "Status patches written, by kind", ["kind"]
)
EVENTS_DROPPED = Counter(
    "gcpcall_events_dropped_total", "Events not posted because the backlog was full"
)
