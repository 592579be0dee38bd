"""The chart's alerts (templates/prometheusrule.yaml) as Prometheus sees them: `promtool check
rules` on the rendered rules, and `promtool test rules` with the unit tests of
test_alert_rules_promtool.yaml, where every alert fires in one case and stays quiet in
another. `make lint` runs the same two commands.

Why here and not in unit/: the rules are rendered by helm, and checked by promtool; both are
built by `make tools` into .bin/, and a missing one fails these tests.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import BIN
from tests.e2e.conftest import E2E_VALUES, OPERATOR_NS, Helm, of_kind, one
from tests.unit.test_dashboard import problems

PROMTOOL = BIN / "promtool"
PROMTOOL_TESTS = Path(__file__).with_name("test_alert_rules_promtool.yaml")
RULES_FILE = "gcpcall-alerts.rules.yaml"  # the name the promtool tests load
ALERTS = {
    "GcpCallRunsFailing", "GcpCallIdentityNotReady", "GcpCallPermissionDenied",
    "GcpCallDeletionBlocked", "GcpCallRelayRefusals", "GcpCallOperationsFailing",
    "GcpCallSyncStalled", "GcpCallOperatorAbsent",
}


@pytest.fixture(scope="session")
def promtool() -> Path:
    if not PROMTOOL.exists():
        pytest.fail(
            f"promtool is missing ({PROMTOOL}): run `make tools` (it builds promtool)",
            pytrace=False,
        )
    return PROMTOOL


def with_rules(**alerts: Any) -> dict[str, Any]:
    values = copy.deepcopy(E2E_VALUES)
    values["metrics"] = {"prometheusRule": {"enabled": True, **alerts}}
    return values


def rendered_rule(helm: Helm, values: dict[str, Any]) -> dict[str, Any]:
    return one(helm.template(values), "PrometheusRule")


def rules_of(rule: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}


def run_promtool(promtool: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(promtool), *args], capture_output=True, text=True, timeout=120,
                          check=False)


def write_rules(rule: dict[str, Any], where: Path) -> Path:
    """The PrometheusRule's spec is a Prometheus rules file."""
    path = where / RULES_FILE
    path.write_text(yaml.safe_dump(rule["spec"]))
    return path


# --- promtool ------------------------------------------------------------------------------


def test_promtool_checks_and_unit_tests_the_rendered_rules(
    helm: Helm, promtool: Path, tmp_path: Path
) -> None:
    rules = write_rules(rendered_rule(helm, with_rules()), tmp_path)
    check = run_promtool(promtool, "check", "rules", str(rules))
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in check.stdout
    tests = tmp_path / PROMTOOL_TESTS.name
    shutil.copy(PROMTOOL_TESTS, tests)
    proc = run_promtool(promtool, "test", "rules", str(tests))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    doc = yaml.safe_load(PROMTOOL_TESTS.read_text())
    assert doc["rule_files"] == [RULES_FILE]
    firing: set[str] = set()
    quiet: set[str] = set()
    for group in doc["tests"]:
        for case in group["alert_rule_test"]:
            (firing if case["exp_alerts"] else quiet).add(case["alertname"])
    assert firing == ALERTS, ALERTS ^ firing
    assert quiet == ALERTS, ALERTS ^ quiet


def test_changed_values_still_make_valid_rules(
    helm: Helm, promtool: Path, tmp_path: Path
) -> None:
    rule = rendered_rule(helm, with_rules(
        labels={"release": "kube-prometheus-stack"},
        additionalLabels={"team": "platform"},
        alerts={
            "runsFailing": {"window": "1h", "threshold": 0.01, "for": "30m",
                            "severity": "critical"},
            "relayRefusals": {"threshold": 1, "for": "2m"},
            "syncStalled": {"driftCheckSeconds": 1800},
            "operatorAbsent": {"selector": 'job="ops/gcpcall"', "for": "10m"},
            "deletionBlocked": {"enabled": False},
        },
    ))
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    rules = rules_of(rule)
    assert set(rules) == ALERTS - {"GcpCallDeletionBlocked"}
    for r in rules.values():
        assert r["labels"]["team"] == "platform"
    runs = rules["GcpCallRunsFailing"]
    assert (runs["for"], runs["labels"]["severity"]) == ("30m", "critical")
    assert "[1h]" in runs["expr"]
    assert runs["expr"].rstrip().endswith("> 0.01")
    assert rules["GcpCallRelayRefusals"]["for"] == "2m"
    assert rules["GcpCallRelayRefusals"]["expr"].rstrip().endswith("> 1")
    assert "> 3600" in rules["GcpCallSyncStalled"]["expr"]
    assert rules["GcpCallOperatorAbsent"]["expr"] == 'absent(up{job="ops/gcpcall"} == 1)'
    check = run_promtool(promtool, "check", "rules", str(write_rules(rule, tmp_path)))
    assert check.returncode == 0, check.stdout + check.stderr


# --- what the rules say ----------------------------------------------------------------------


def test_alerts_name_where_to_look_and_ask_only_for_exported_metrics(helm: Helm) -> None:
    rules = rules_of(rendered_rule(helm, with_rules()))
    assert set(rules) == ALERTS
    for name, r in rules.items():
        expr = r["expr"]
        if name != "GcpCallOperatorAbsent":  # up{}: Prometheus' own
            assert not problems(expr), (name, problems(expr))
        assert r["labels"]["severity"] in {"warning", "critical"}
        assert re.fullmatch(r"[0-9]+[smh]", r["for"]), r["for"]
        summary, description = r["annotations"]["summary"], r["annotations"]["description"]
        assert len(description) > 2 * len(summary), name  # says what to do next
        # where the alert's labels say which namespace (or which refusal), so does the text
        grouped = {label.strip() for group in re.findall(r"\bby \(([^)]*)\)", expr)
                   for label in group.split(",")}
        for label in grouped & {"namespace", "status", "reason"}:
            assert f"$labels.{label}" in summary, (name, label)
            assert f"$labels.{label}" in description, (name, label)


def test_the_operator_absent_alert_watches_the_metrics_service_job(helm: Helm) -> None:
    docs = helm.template(with_rules())
    service = next(s for s in of_kind(docs, "Service")
                   if s["metadata"]["labels"]["app.kubernetes.io/component"] == "metrics")
    expr = rules_of(one(docs, "PrometheusRule"))["GcpCallOperatorAbsent"]["expr"]
    # a ServiceMonitor's job is the Service's name
    assert expr == (f'absent(up{{job="{service["metadata"]["name"]}",'
                    f'namespace="{OPERATOR_NS}"}} == 1)')


def test_no_rules_unless_asked_or_without_metrics(helm: Helm) -> None:
    assert not of_kind(helm.template(E2E_VALUES), "PrometheusRule")
    values = with_rules()
    values["metrics"]["enabled"] = False
    assert not of_kind(helm.template(values), "PrometheusRule")


@pytest.mark.parametrize(
    ("alerts", "error"),
    [
        ({"runsFailing": {"for": "5 minutes"}}, "/metrics/prometheusRule/alerts/runsFailing/for"),
        ({"relayRefusals": {"threshold": -1}}, "threshold"),
        ({"syncStalled": {"driftCheckSeconds": 0}}, "driftCheckSeconds"),
        ({"noSuchAlert": {"enabled": True}}, "noSuchAlert"),
    ],
)
def test_bad_alert_values_are_refused(helm: Helm, alerts: dict[str, Any], error: str) -> None:
    proc = helm.render(with_rules(alerts=alerts))
    assert proc.returncode != 0
    assert error in proc.stderr, proc.stderr
