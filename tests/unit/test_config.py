"""Settings.from_env: the defaults, each refusal as one line, and the command's exit 2.

Every refused value raises one SettingsError whose message is a single line naming the
variable, the value and what is allowed; `gcpcall-operator run` and `relay` print that line
alone and exit 2 (checked on real processes, before they would connect to anything).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gcpcall import config
from gcpcall.config import IdentityMode, LogFormat, Settings, SettingsError

REPO = Path(__file__).resolve().parents[2]


def refusal(env: dict[str, str]) -> str:
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env, warn_unknown=False)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_defaults_are_kept() -> None:
    s = Settings.from_env({}, warn_unknown=False)
    assert s == Settings(lease_namespace=s.lease_namespace)
    assert (s.cluster_name, s.identity_mode, s.relay_port, s.drift_check_seconds) == (
        "default", IdentityMode.WORKLOAD_IDENTITY, 8443, 600.0)
    assert (s.run_settle_seconds, s.events_per_second) == (2.0, 25.0)
    assert s.endpoints.scheduler == "cloudscheduler.googleapis.com:443"
    assert not s.endpoints.grpc_insecure
    assert not s.endpoints.allow_http_targets
    assert (s.leader_election, s.lease_name) == (False, "gcpcall-operator")
    assert (s.lease_duration_seconds, s.lease_renew_seconds, s.lease_retry_seconds) == (
        15.0, 10.0, 2.0)
    assert s.log_format is LogFormat.TEXT


def test_lease_namespace_is_the_pods_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    monkeypatch.setattr(config, "_SA_NAMESPACE", tmp_path / "absent")
    assert Settings.from_env({}, warn_unknown=False).lease_namespace == "default"
    (tmp_path / "namespace").write_text("gcpcall-system\n")
    monkeypatch.setattr(config, "_SA_NAMESPACE", tmp_path / "namespace")
    assert Settings.from_env({}, warn_unknown=False).lease_namespace == "gcpcall-system"
    env = {"GCPCALL_LEASE_NAMESPACE": "other"}
    assert Settings.from_env(env, warn_unknown=False).lease_namespace == "other"


def test_every_setting_is_read() -> None:
    s = Settings.from_env({
        "GCPCALL_CLUSTER_NAME": "prod-1",
        "GCPCALL_PROJECT": "p",
        "GCPCALL_LOCATION": "europe-west1",
        "GCPCALL_SERVICE_ACCOUNT": "runner",
        "GCPCALL_IDENTITY_MODE": "impersonation",  # case does not matter
        "GCPCALL_IMPERSONATION_DELEGATES": ("a@p.iam.gserviceaccount.com, "
                                            "b@p.iam.gserviceaccount.com"),
        "GCPCALL_RELAY_URL": "https://relay.example.com/gcpcall",
        "GCPCALL_RELAY_PORT": "0",
        "GCPCALL_DRIFT_CHECK_SECONDS": "3",
        "GCPCALL_RUN_SETTLE_SECONDS": "0",
        "GCPCALL_EVENTS_PER_SECOND": "2.5",
        "GCPCALL_GRPC_INSECURE": "TRUE",
        "GCPCALL_HOST_MAP": "compute.googleapis.com=http://127.0.0.1:8089, ",
        "GCPCALL_LEADER_ELECTION": "yes",
        "GCPCALL_LEASE_NAME": "gcpcall-operator-2",
        "GCPCALL_LEASE_NAMESPACE": "ops",
        "GCPCALL_LEASE_DURATION_SECONDS": "30",
        "GCPCALL_LEASE_RENEW_SECONDS": "20",
        "GCPCALL_LEASE_RETRY_SECONDS": "4",
        "GCPCALL_LOG_FORMAT": "JSON",
    }, warn_unknown=False)
    assert s.cluster_name == "prod-1"
    assert s.identity_mode is IdentityMode.IMPERSONATION
    assert s.impersonation_delegates == ("a@p.iam.gserviceaccount.com",
                                         "b@p.iam.gserviceaccount.com")
    assert (s.relay_port, s.drift_check_seconds, s.run_settle_seconds) == (0, 3.0, 0.0)
    assert s.events_per_second == 2.5
    assert s.endpoints.grpc_insecure
    assert dict(s.endpoints.host_map) == {"compute.googleapis.com": "http://127.0.0.1:8089"}
    assert (s.leader_election, s.lease_name, s.lease_namespace) == (
        True, "gcpcall-operator-2", "ops")
    assert (s.lease_duration_seconds, s.lease_renew_seconds, s.lease_retry_seconds) == (
        30.0, 20.0, 4.0)
    assert s.log_format is LogFormat.JSON


@pytest.mark.parametrize(("variable", "value", "allowed"), [
    ("GCPCALL_DRIFT_CHECK_SECONDS", "abc", "a number of seconds, greater than 0"),
    ("GCPCALL_DRIFT_CHECK_SECONDS", "-1", "a number of seconds, greater than 0"),
    ("GCPCALL_DRIFT_CHECK_SECONDS", "0", "greater than 0"),
    ("GCPCALL_DRIFT_CHECK_SECONDS", "nan", "greater than 0"),
    ("GCPCALL_RUN_SETTLE_SECONDS", "-0.5", "0 or more"),
    ("GCPCALL_EVENTS_PER_SECOND", "fast", "a number of events a second"),
    ("GCPCALL_LEASE_DURATION_SECONDS", "15s", "a number of seconds"),
    ("GCPCALL_IDENTITY_MODE", "Workload", "one of WorkloadIdentity, Impersonation, Operator"),
    ("GCPCALL_LOG_FORMAT", "yaml", "one of text, json"),
    ("GCPCALL_HOST_MAP", "compute.googleapis.com", "host=base_url"),
    ("GCPCALL_HOST_MAP", "a.googleapis.com=http://x:1,b.googleapis.com", "host=base_url"),
    ("GCPCALL_HOST_MAP", "=http://127.0.0.1:1", "host=base_url"),
    ("GCPCALL_HOST_MAP", "a.googleapis.com=127.0.0.1:1", "host=base_url"),
    ("GCPCALL_RELAY_URL", "http://relay.example.com/x",
     "an https:// URL (http:// only with GCPCALL_ALLOW_HTTP_TARGETS=true)"),
    ("GCPCALL_RELAY_URL", "relay.example.com", "an https:// URL"),
    ("GCPCALL_RELAY_URL", "https://user:pw@relay.example.com", "an https:// URL"),
    ("GCPCALL_RELAY_PORT", "70000", "a port number 0-65535"),
    ("GCPCALL_RELAY_PORT", "-1", "a port number 0-65535"),
    ("GCPCALL_RELAY_PORT", "http", "a port number 0-65535"),
    ("GCPCALL_GRPC_INSECURE", "ture", "true or false"),
    ("GCPCALL_ALLOW_HTTP_TARGETS", "maybe", "true or false"),
    ("GCPCALL_LEADER_ELECTION", "enabled", "true or false"),
    ("GCPCALL_CLUSTER_NAME", "my_cluster", "1-63 letters, digits or hyphens"),
    ("GCPCALL_LEASE_NAME", "Gcpcall", "a Kubernetes object name"),
    ("GCPCALL_LEASE_NAMESPACE", "a.b", "a Kubernetes namespace name"),
    ("GCPCALL_STS_ENDPOINT", "sts.googleapis.com/v1/token", "an https:// or http:// URL"),
    ("GCPCALL_OIDC_CERTS_URL", "ftp://example.com/certs", "an https:// or http:// URL"),
    ("GCPCALL_IAM_CREDENTIALS_ENDPOINT", "https://host:99999", "URL with a host"),
    ("GCPCALL_SCHEDULER_ENDPOINT", "host :443", "a gRPC target"),
    ("GCPCALL_IMPERSONATION_DELEGATES", "a@x,not-an-email", "service account emails"),
])
def test_a_bad_value_is_one_line_naming_it(variable: str, value: str, allowed: str) -> None:
    message = refusal({variable: value})
    assert message.startswith(f"invalid setting {variable}={value!r}: ")
    assert allowed in message


def test_http_relay_url_only_with_http_targets() -> None:
    env = {"GCPCALL_RELAY_URL": "http://127.0.0.1:8443/relay", "GCPCALL_ALLOW_HTTP_TARGETS": "true"}
    assert Settings.from_env(env, warn_unknown=False).relay_url == env["GCPCALL_RELAY_URL"]


def test_lease_timings_must_nest() -> None:
    message = refusal({"GCPCALL_LEASE_DURATION_SECONDS": "10"})  # renew stays 10
    assert message == ("invalid setting GCPCALL_LEASE_RENEW_SECONDS='10': less than "
                       "GCPCALL_LEASE_DURATION_SECONDS (10)")
    message = refusal({"GCPCALL_LEASE_RETRY_SECONDS": "12", "GCPCALL_LEASE_DURATION_SECONDS": "20",
                       "GCPCALL_LEASE_RENEW_SECONDS": "12"})
    assert message.startswith("invalid setting GCPCALL_LEASE_RETRY_SECONDS='12': less than")


def test_a_long_value_is_cut_short() -> None:
    message = refusal({"GCPCALL_DRIFT_CHECK_SECONDS": "9" * 500 + "x"})
    assert len(message) < 250
    assert "..." in message


def test_empty_values_take_the_defaults() -> None:
    s = Settings.from_env({"GCPCALL_DRIFT_CHECK_SECONDS": " ", "GCPCALL_IDENTITY_MODE": ""},
                          warn_unknown=False)
    assert s.drift_check_seconds == 600.0
    assert s.identity_mode is IdentityMode.WORKLOAD_IDENTITY


def test_unknown_variables_are_one_warning_once(caplog: pytest.LogCaptureFixture,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "_warned", set())
    env = {"GCPCALL_DRIFT_CHECK_SECOND": "3", "GCPCALL_PROJETC": "p", "GCPCALL_PROJECT": "p",
           "OTHER": "x"}
    assert config.unknown_variables(env) == ["GCPCALL_DRIFT_CHECK_SECOND", "GCPCALL_PROJETC"]
    with caplog.at_level(logging.WARNING, logger="gcpcall.config"):
        Settings.from_env(env)
        Settings.from_env(env)  # startup reads them again: no second warning
    warnings = [r.getMessage() for r in caplog.records if r.name == "gcpcall.config"]
    assert warnings == ["unknown settings ignored (misspelt, or from a newer version): "
                        "GCPCALL_DRIFT_CHECK_SECOND, GCPCALL_PROJETC"]


def test_every_known_variable_is_read_by_from_env() -> None:
    source = (REPO / "operator" / "gcpcall" / "config.py").read_text()
    body = source.split("def from_env", 1)[1].split("KNOWN_VARIABLES = ", 1)[0]
    for name in config.KNOWN_VARIABLES:
        assert f'"{name}"' in body, name


@pytest.mark.parametrize("command", ["run", "relay"])
def test_the_command_prints_one_line_and_exits_2(command: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GCPCALL_")}
    env.update(GCPCALL_DRIFT_CHECK_SECONDS="abc", KUBECONFIG=os.devnull)
    proc = subprocess.run([sys.executable, "-m", "gcpcall", command, "--metrics-port", "0"],
                          env=env, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr == (f"gcpcall-operator {command}: invalid setting "
                           "GCPCALL_DRIFT_CHECK_SECONDS='abc': a number of seconds, greater "
                           "than 0 (e.g. 600)\n")
