"""Prometheus metrics: what the operator did and what Google answered.

Why here: metrics are read by people running the operator; names and labels are part of its
interface, so they are declared in one place. Labels never carry tokens or request bodies,
and never an object's name (unbounded cardinality).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "EVENTS_DROPPED",
    "GOOGLE_CALLS",
    "LEADER",
    "OBJECTS",
    "OPERATIONS",
    "OPERATIONS_IN_FLIGHT",
    "OPERATION_POLLS",
    "OPERATION_SECONDS",
    "RELAY_CALLS",
    "RELAY_CALL_SECONDS",
    "RELAY_REFUSALS",
    "RELAY_REQUESTS",
    "RUNS",
    "STATUS_CONFLICTS",
    "STATUS_PATCHES",
    "SYNC_DURATION",
    "SYNC_LAST_LIST",
    "SYNC_LISTS",
    "TRACKED",
]

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
STATUS_CONFLICTS = Counter(
    "gcpcall_status_conflicts_total",
    "Status patches refused because the object changed since it was read (then retried)",
    ["kind"],
)
TRACKED = Gauge(
    "gcpcall_tracked_objects", "Objects each background loop currently follows", ["loop"]
)
RELAY_REQUESTS = Counter(
    "gcpcall_relay_requests_total",
    "Requests to the relay by kind and verdict (called, duplicate, refused)", ["kind", "verdict"],
)
RELAY_REFUSALS = Counter(
    "gcpcall_relay_refusals_total",
    "Relay requests refused, by HTTP status and reason (no call made, no status written)",
    ["status", "reason"],
)
RELAY_CALLS = Counter(
    "gcpcall_relay_calls_total", "Calls the relay made, by target host and google.rpc code",
    ["host", "code"],
)
RELAY_CALL_SECONDS = Histogram(
    "gcpcall_relay_call_seconds", "Duration of the relay's call to the target",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 180, 600, 1800),
)
OBJECTS = Gauge(
    "gcpcall_objects", "Objects by kind, namespace and the reason of their Ready condition",
    ["kind", "namespace", "reason"],
)
RUNS = Counter(
    "gcpcall_runs_total", "Run (GcpTask: attempt) outcomes recorded in status",
    ["kind", "namespace", "result"],
)
OPERATIONS = Counter(
    "gcpcall_operations_total", "Followed long-running operations that ended, by result",
    ["namespace", "result"],
)
OPERATIONS_IN_FLIGHT = Gauge(
    "gcpcall_operations_in_flight", "Long-running operations being followed"
)
OPERATION_POLLS = Counter(
    "gcpcall_operation_polls_total", "Polls of long-running operations, by result", ["result"]
)
OPERATION_SECONDS = Histogram(
    "gcpcall_operation_follow_seconds", "From the call to the operation's end",
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400),
)
SYNC_LAST_LIST = Gauge(
    "gcpcall_sync_last_list_timestamp_seconds",
    "Unix time of the last successful read of Google by the batched sync or the poller",
    ["kind"],
)
LEADER = Gauge(
    "gcpcall_leader",
    "1 while this replica runs the handlers and loops (it holds the Lease, or leader "
    "election is off), 0 while it stands by",
)
EVENTS_DROPPED = Counter(
    "gcpcall_events_dropped_total",
    "Events not posted: the backlog was full, or the API server did not take them after retries"
)
