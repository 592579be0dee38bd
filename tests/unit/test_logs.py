"""The log line formatter, the kopf level policy and the redaction filter.

Lines are written through `line_handler` exactly as the operator writes them, by our own
loggers (`extra={"object": ref, "google": name}`) and by kopf's public `ObjectLogger`, the
per-object logger kopf hands to handlers and uses for its own handler lines.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import kopf
import pytest

from gcpcall.config import SettingsError
from gcpcall.kube import ObjectRef
from gcpcall.observe import logs
from gcpcall.observe.logs import line_handler, redact_secrets, setup_logging

REF = ObjectRef("ScheduledGcpCall", "scheduledgcpcalls", "team-a", "nightly", "uid-1")
BODY = {"apiVersion": "gcpcall.dev/v1alpha1", "kind": "GcpTask",
        "metadata": {"namespace": "team-b", "name": "once", "uid": "uid-2"}}
JOB = "projects/p/locations/l/jobs/c_team-a_nightly"
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQifQ.c2lnbmF0dXJl"


class Capture:
    def __init__(self, log_format: str) -> None:
        self.stream = io.StringIO()
        self.handler = line_handler(log_format, self.stream)

    def lines(self) -> list[str]:
        return self.stream.getvalue().splitlines()

    def docs(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.lines()]


@pytest.fixture
def capture(request: pytest.FixtureRequest) -> Iterator[Capture]:
    """Our lines and kopf's through one handler, as in the operator (levels from INFO)."""
    cap = Capture(getattr(request, "param", "json"))
    loggers = [logging.getLogger(n) for n in ("gcpcall.test", "kopf.objects", "kopf.test")]
    saved = [(lg.level, lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.addHandler(cap.handler)
        lg.setLevel(logging.INFO)
        lg.propagate = False
    yield cap
    for lg, (level, propagate) in zip(loggers, saved, strict=True):
        lg.removeHandler(cap.handler)
        lg.setLevel(level)
        lg.propagate = propagate


def test_json_line_of_ours_carries_the_object_and_google_name(capture: Capture) -> None:
    logging.getLogger("gcpcall.test").warning("ListJobs failed: %s", "UNAVAILABLE",
                                              extra={"object": REF, "google": JOB})
    [doc] = capture.docs()
    assert set(doc) == {"time", "level", "logger", "message", "namespace", "name", "kind",
                        "uid", "google"}
    assert doc["level"] == "WARNING"
    assert doc["logger"] == "gcpcall.test"
    assert doc["message"] == "ListJobs failed: UNAVAILABLE"
    assert (doc["namespace"], doc["name"], doc["kind"], doc["uid"]) == (
        "team-a", "nightly", "ScheduledGcpCall", "uid-1")
    assert doc["google"] == JOB
    assert str(doc["time"]).endswith("Z")
    assert "T" in str(doc["time"])


def test_json_line_without_an_object_has_only_the_four_fields(capture: Capture) -> None:
    logging.getLogger("gcpcall.test").info("started")
    [doc] = capture.docs()
    assert set(doc) == {"time", "level", "logger", "message"}


def test_kopf_object_logger_lines_carry_the_object(capture: Capture) -> None:
    logger = kopf.ObjectLogger(body=kopf.Body(BODY), settings=kopf.OperatorSettings())
    logger.info("Handler 'create_cloud_task' succeeded.")
    [doc] = capture.docs()
    assert doc["logger"] == "kopf.objects"
    assert (doc["namespace"], doc["name"], doc["kind"], doc["uid"]) == (
        "team-b", "once", "GcpTask", "uid-2")
    assert "settings" not in doc


def test_a_mapping_object_is_accepted(capture: Capture) -> None:
    logging.getLogger("gcpcall.test").info("x", extra={"object": {"namespace": "n", "name": "o"}})
    [doc] = capture.docs()
    assert (doc["namespace"], doc["name"]) == ("n", "o")
    assert "uid" not in doc


@pytest.mark.parametrize("capture", ["text"], indirect=True)
def test_text_line_prefixes_the_object(capture: Capture) -> None:
    logging.getLogger("gcpcall.test").warning("drift not corrected", extra={"object": REF,
                                                                            "google": JOB})
    kopf.ObjectLogger(body=kopf.Body(BODY), settings=kopf.OperatorSettings()).info("hello")
    ours, theirs = capture.lines()
    assert ours.endswith(f"WARNING gcpcall.test: [team-a/nightly] drift not corrected "
                         f"(google: {JOB})")
    assert theirs.endswith("INFO kopf.objects: [team-b/once] hello")


def test_exceptions_are_one_json_line(capture: Capture) -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("gcpcall.test").exception("reconcile failed", extra={"object": REF})
    [line] = capture.lines()
    doc = json.loads(line)
    assert doc["level"] == "ERROR"
    assert "RuntimeError: boom" in str(doc["exception"])


def test_routine_watch_events_are_debug(capture: Capture) -> None:
    logger = kopf.LocalObjectLogger(body=kopf.Body(BODY), settings=kopf.OperatorSettings())
    logger.info("Handler 'watch_events' succeeded.")
    logger.info("Handler 'create_cloud_task' succeeded.")
    assert [d["message"] for d in capture.docs()] == ["Handler 'create_cloud_task' succeeded."]


def test_kopf_retries_are_warnings_and_final_failures_errors(capture: Capture) -> None:
    logger = kopf.ObjectLogger(body=kopf.Body(BODY), settings=kopf.OperatorSettings())
    logger.error("Handler 'create_cloud_task' failed temporarily: UNAVAILABLE")
    logger.error("Handler 'create_cloud_task' failed temporarily but will exceed 3 retries: x")
    logging.getLogger("kopf.test").error("Request attempt 1 failed; will retry: GET x -> y")
    logger.error("Handler 'create_cloud_task' failed permanently: bad")
    assert [d["level"] for d in capture.docs()] == ["WARNING", "ERROR", "WARNING", "ERROR"]


def test_our_errors_keep_their_level(capture: Capture) -> None:
    logging.getLogger("gcpcall.test").error("failed temporarily: not kopf")
    assert [d["level"] for d in capture.docs()] == ["ERROR"]


@pytest.mark.parametrize("secret", [
    "ya29.emu.c2VjcmV0LXRva2Vu", JWT, "Bearer sk-0123456789abcdefghij",
])
def test_secrets_never_reach_a_line(capture: Capture, secret: str) -> None:
    log = logging.getLogger("gcpcall.test")
    log.warning("calling with %s", secret, extra={"object": REF})
    log.warning(f"inline {secret} in the format")
    try:
        raise ValueError(f"rejected token {secret}")
    except ValueError:
        log.exception("failed")
    kopf.ObjectLogger(body=kopf.Body(BODY), settings=kopf.OperatorSettings()).error(
        "Handler 'x' failed temporarily: %s", secret)
    text = capture.stream.getvalue()
    assert len(capture.docs()) == 4
    core = secret.split()[-1]
    assert core not in text
    assert "eyJ" not in text
    assert "ya29." not in text
    assert "[REDACTED]" in text


def test_redaction_patterns() -> None:
    assert redact_secrets('{"access_token": "abc", "expires_in": 3599}') == (
        '{"access_token": "[REDACTED]", "expires_in": 3599}')
    assert redact_secrets("subject_token=abc&audience=x") == (
        "subject_token=[REDACTED]&audience=x")
    assert redact_secrets('{"token": "t0p", "kind": "TokenRequest"}') == (
        '{"token": "[REDACTED]", "kind": "TokenRequest"}')
    assert redact_secrets("-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----"
                          ) == "[REDACTED]"
    # ordinary words stay
    for text in ("waits for a token: IdentityNotReady", "basic setup done",
                 "Bearer tokens expire", "password policy"):
        assert redact_secrets(text) == text


@pytest.fixture
def root_logging() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    for h in root.handlers[:]:
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)
    logging.captureWarnings(False)


def test_setup_logging_reads_the_format_from_the_environment(
    root_logging: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GCPCALL_LOG_FORMAT", "json")
    setup_logging(False)
    [handler] = root_logging.handlers
    assert isinstance(handler.formatter, logs.LineFormatter)
    assert handler.formatter.log_format == "json"
    assert root_logging.level == logging.INFO
    setup_logging(True, "text")  # the command line wins
    [handler] = root_logging.handlers
    assert isinstance(handler.formatter, logs.LineFormatter)
    assert handler.formatter.log_format == "text"
    assert root_logging.level == logging.DEBUG


def test_setup_logging_refuses_an_unknown_format(
    root_logging: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GCPCALL_LOG_FORMAT", "yaml")
    with pytest.raises(SettingsError, match=r"GCPCALL_LOG_FORMAT='yaml': one of text, json"):
        setup_logging(False)
