"""The chart's Grafana dashboard (helm/gcpcall-operator/dashboards/gcpcall-operator.json) is a
dashboard model Grafana loads, and asks only for metrics the operator exports.

METRICS is the contract between the operator and everything that reads its metrics (this
dashboard, the chart's alerts in tests/e2e/test_alert_rules.py): each name with its type and
labels, and the values of the labels that have a fixed set. A test that scrapes a running
operator checks the other side.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "helm" / "gcpcall-operator" / "dashboards" / "gcpcall-operator.json"

READY_REASONS = frozenset({
    "UpToDate", "Paused", "InvalidSpec", "IdentityNotReady", "PermissionDenied", "NotFound",
    "GcpError", "AdoptionRefused", "BodySourceNotFound", "RelayNotConfigured",
    "DeletionBlocked", "Created", "QueueNotFound",
})
KINDS = frozenset({"ScheduledGcpCall", "GcpTask"})
LOOPS = frozenset({"sync", "poller", "queue-waits", "expiries", "deletions", "status"})


@dataclass(frozen=True)
class Metric:
    type: str  # counter | gauge | histogram
    labels: frozenset[str] = frozenset()
    # label -> its only values (labels not listed here take any value)
    values: dict[str, frozenset[str]] = field(default_factory=dict)


def _m(type_: str, *labels: str, **values: frozenset[str]) -> Metric:
    return Metric(type_, frozenset(labels), dict(values))


METRICS: dict[str, Metric] = {
    "gcpcall_objects": _m("gauge", "kind", "namespace", "reason",
                          kind=KINDS, reason=READY_REASONS),
    "gcpcall_runs_total": _m("counter", "kind", "namespace", "result",
                             kind=KINDS, result=frozenset({"Succeeded", "Failed"})),
    "gcpcall_operations_total": _m(
        "counter", "namespace", "result",
        result=frozenset({"Succeeded", "Failed", "DeadlineExceeded"})),
    "gcpcall_operations_in_flight": _m("gauge"),
    "gcpcall_sync_last_list_timestamp_seconds": _m("gauge", "kind", kind=KINDS),
    "gcpcall_sync_lists_total": _m("counter", "kind", kind=KINDS),
    "gcpcall_sync_duration_seconds": _m("histogram", "kind", kind=KINDS),
    "gcpcall_google_calls_total": _m("counter", "service", "method", "code"),
    "gcpcall_status_patches_total": _m("counter", "kind", kind=KINDS),
    "gcpcall_status_conflicts_total": _m("counter", "kind", kind=KINDS),
    "gcpcall_tracked_objects": _m("gauge", "loop", loop=LOOPS),
    "gcpcall_events_dropped_total": _m("counter"),
    "gcpcall_identity_token_requests_total": _m("counter", "step", "result",
                                                result=frozenset({"ok", "error"})),
    "gcpcall_identity_cache_lookups_total": _m("counter", "mode", "result"),
    "gcpcall_relay_requests_total": _m(
        "counter", "kind", "verdict", verdict=frozenset({"called", "duplicate", "refused"})),
    "gcpcall_relay_refusals_total": _m("counter", "status", "reason"),
    "gcpcall_relay_calls_total": _m("counter", "host", "code"),
    "gcpcall_relay_call_seconds": _m("histogram"),
}
# Labels every scraped series has (the target's), and a histogram's bucket bound.
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod", "service", "container"})
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

# --- reading PromQL (enough for the expressions we write) -------------------------------------

_SELECTOR = re.compile(r"\b(gcpcall_[a-z0-9_]+)\b\s*(\{([^}]*)\})?")
_MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)")


@dataclass(frozen=True)
class Use:
    """One selector of a gcpcall metric in an expression."""

    series: str  # as written (gcpcall_sync_duration_seconds_bucket)
    metric: str  # the contract's name (gcpcall_sync_duration_seconds)
    matchers: tuple[tuple[str, str, str], ...]


def contract_name(series: str) -> str | None:
    if series in METRICS:
        return series
    for suffix in HISTOGRAM_SUFFIXES:
        base = series.removesuffix(suffix)
        if base != series and METRICS.get(base, Metric("")).type == "histogram":
            return base
    return None


def uses(expr: str) -> list[Use]:
    found = []
    for m in _SELECTOR.finditer(expr):
        series = m.group(1)
        name = contract_name(series)
        assert name is not None, f"{series} is not a metric the operator exports: {expr}"
        found.append(Use(series, name, tuple(_MATCHER.findall(m.group(3) or ""))))
    return found


def problems(expr: str) -> list[str]:
    """What in `expr` does not fit METRICS: unknown metrics or labels, values a label never
    takes, a histogram used without its suffix, a grouping by a label none of them has."""
    out = []
    try:
        found = uses(expr)
    except AssertionError as e:
        return [str(e)]
    if not found:
        out.append(f"no gcpcall metric in {expr!r}")
    known = set(TARGET_LABELS) | {"le"}
    for u in found:
        metric = METRICS[u.metric]
        known |= metric.labels
        if metric.type == "histogram" and u.series == u.metric:
            out.append(f"{u.metric} is a histogram: use _bucket, _sum or _count")
        for label, op, value in u.matchers:
            if label not in metric.labels | TARGET_LABELS:
                out.append(f"{u.metric} has no label {label!r}")
            allowed = metric.values.get(label)
            if allowed is None or value.startswith("$"):
                continue
            words = value.split("|") if op in ("=~", "!~") else [value]
            unknown = [w for w in words if w not in allowed]
            if unknown:
                out.append(f"{u.metric}{{{label}}} never is {unknown} (only {sorted(allowed)})")
    for group in _GROUPING.findall(expr):
        for label in (g.strip() for g in group.split(",")):
            if label and label not in known:
                out.append(f"grouping by {label!r}, which none of the metrics has: {expr}")
    return out


# --- the dashboard -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def all_panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for p in panels:
        out.append(p)
        out.extend(all_panels(p.get("panels", [])))
    return out


def graphs(dash: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in all_panels(dash["panels"]) if p["type"] != "row"]


def expressions(dash: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in graphs(dash) for t in p["targets"]]


def test_it_is_a_grafana_dashboard_model(dashboard: dict[str, Any]) -> None:
    assert isinstance(dashboard["schemaVersion"], int)
    assert dashboard["schemaVersion"] >= 36  # Grafana 9 and later
    assert dashboard["title"]
    assert re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", dashboard["uid"])
    assert dashboard["panels"]
    panels = all_panels(dashboard["panels"])
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"panel ids repeat: {ids}"
    assert all(isinstance(i, int) for i in ids)
    for p in graphs(dashboard):
        assert p["title"], p
        assert p["type"] in {"timeseries", "stat", "gauge", "bargauge", "table"}, p["type"]
        assert p["targets"], f"panel {p['title']!r} has no targets"
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        assert all(t["expr"].strip() for t in p["targets"]), p["title"]


def test_panels_sit_on_the_grid_without_overlapping(dashboard: dict[str, Any]) -> None:
    cells: dict[tuple[int, int], str] = {}
    for p in all_panels(dashboard["panels"]):
        g = p["gridPos"]
        assert g["x"] >= 0, p["title"]
        assert g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = p["title"]


def test_the_data_source_is_a_variable(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for v in variables.values():
        if v["type"] == "query":
            assert v["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert not problems(v["definition"]), problems(v["definition"])
    used = {m for e in expressions(dashboard) for m in re.findall(r"\$(\w+)", e)}
    assert used - {"__rate_interval"} <= set(variables), used


def test_every_expression_asks_only_for_exported_metrics(dashboard: dict[str, Any]) -> None:
    found = {e: problems(e) for e in expressions(dashboard)}
    assert not {e: p for e, p in found.items() if p}


def test_it_shows_what_operating_the_operator_needs(dashboard: dict[str, Any]) -> None:
    exprs = expressions(dashboard)
    used = {u.metric for e in exprs for u in uses(e)}
    # objects by Ready reason, run results, Google calls and errors, token requests, relay
    # requests by verdict, relay latency, events dropped, tracked objects per loop
    for metric in ("gcpcall_objects", "gcpcall_runs_total", "gcpcall_google_calls_total",
                   "gcpcall_identity_token_requests_total", "gcpcall_relay_requests_total",
                   "gcpcall_relay_call_seconds", "gcpcall_events_dropped_total",
                   "gcpcall_tracked_objects"):
        assert metric in used, f"no panel shows {metric}"
    assert any("by (reason)" in e and "gcpcall_objects" in e for e in exprs)
    assert any("verdict" in e and "gcpcall_relay_requests_total" in e for e in exprs)
    assert any("by (loop)" in e for e in exprs)
    assert any('code!="OK"' in e and "gcpcall_google_calls_total" in e for e in exprs)
    assert any("histogram_quantile" in e and "gcpcall_relay_call_seconds_bucket" in e
               for e in exprs)


# --- the checker itself ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "complaint"),
    [
        ("sum(rate(gcpcall_runs_totals[5m]))", "not a metric the operator exports"),
        ('gcpcall_objects{reason="Ready"}', "never is ['Ready']"),
        ('gcpcall_objects{phase="Queued"}', "no label 'phase'"),
        ("sum by (verdict) (gcpcall_objects)", "grouping by 'verdict'"),
        ("rate(gcpcall_relay_call_seconds[5m])", "is a histogram"),
        ("time()", "no gcpcall metric"),
    ],
)
def test_the_checker_finds_what_does_not_fit(expr: str, complaint: str) -> None:
    assert any(complaint in p for p in problems(expr)), problems(expr)


def test_the_checker_accepts_what_fits() -> None:
    assert not problems('sum by (kind, le) (rate(gcpcall_sync_duration_seconds_bucket'
                        '{job=~"$job"}[5m]))')
    assert not problems('gcpcall_objects{reason!~"UpToDate|Created|Paused", kind="GcpTask"}')
