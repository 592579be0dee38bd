"""Logging setup: one formatter for our lines and kopf's, levels that mean something, and no
credential in any line.

Why one formatter: platform teams ship operator logs to a log store as JSON lines, and
query them by object. Our lines and kopf's go through the same handler, so each line has
the same fields: `time`, `level`, `logger`, `message` and, when the line is about an
object, `namespace`, `name`, `kind` and `uid` (from `extra={"object": ref}` in our code,
from the `k8s_ref` that kopf's per-object loggers put on their records), plus `google`,
the Google resource name, when a line passes `extra={"google": name}`. `text` is the
same line for a terminal. kopf's own JSON formatter is not reused: it lives in a private
module (`kopf._core`), nests the object under one key and adds kopf's `severity`.

Why levels are adjusted: kopf logs "Handler '...' succeeded." at INFO for every handler
call, and the handler that follows every watch event (deletions, operations) runs for
every event of every object; those lines are lowered to DEBUG. kopf logs a retried
failure ("failed temporarily", "will retry") at ERROR; a retry is a WARNING here (it
names the object), and ERROR is left for what needs a human.

Why redaction here: a token in an exception text or a debug line would end in the log
store. `SECRET_PATTERNS` (bearer and basic credentials, `ya29.` access tokens, JWTs,
token-like JSON/form fields, PEM private keys) are replaced in every message and traceback
before any formatter sees them. The patterns live here, below `gcp/`, so that
`gcp.errors.redact` can use the same set.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import re
import sys
from collections.abc import Mapping
from typing import Any, TextIO

from gcpcall.config import LogFormat, SettingsError

__all__ = [
    "ROUTINE_HANDLERS",
    "SECRET_PATTERNS",
    "KopfLevels",
    "LineFormatter",
    "RedactSecrets",
    "line_handler",
    "object_fields",
    "redact_secrets",
    "setup_logging",
]

# Handlers that run on every watch event (handlers/*.py): their success is routine.
# Handlers whose success is routine: every watch event, and every object on a restart (its
# resume: 10,000 objects would be 20,000 INFO lines that say nothing happened).
ROUTINE_HANDLERS = ("watch_events", "resume_job_sync", "resume_task_polling")

REDACTED = "[REDACTED]"
SECRET_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)",
                re.DOTALL), REDACTED),
    # at least 16 characters: a credential, not the next word of "basic setup"
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{16,}"), rf"\1 {REDACTED}"),
    (re.compile(r"\bya29\.[A-Za-z0-9._-]+"), REDACTED),
    (re.compile(r"\beyJ[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*){0,2}"), REDACTED),
    (re.compile(r"(?i)(\"?\b(?:access_token|id_token|refresh_token|client_secret|subject_token|"
                r"assertion|private_key)\"?\s*[:=]\s*\"?)(?!\[REDACTED\])[^\"\s,&}]+"),
     rf"\1{REDACTED}"),
    # `token` and `password` alone only as a form or JSON field: "waits for a token: ..." stays
    (re.compile(r"(?i)(\b(?:token|password)=|\"(?:token|password)\"\s*:\s*\")"
                r"(?!\[REDACTED\])[^\"\s,&}]+"), rf"\1{REDACTED}"),
)

_KOPF_RETRIES = ("failed temporarily: ", "; will retry: ", "; will re-authenticate: ")


def redact_secrets(text: str) -> str:
    """`text` with everything that looks like a credential replaced by [REDACTED]."""
    for pattern, replacement in SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactSecrets(logging.Filter):
    """Replaces credentials in the message, the traceback and the stack of every record."""

    _tracebacks = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # bad %-args: logging would report it; keep the raw text instead
            message = f"{record.msg} {record.args!r}"
        record.msg, record.args = redact_secrets(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._tracebacks.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_secrets(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_secrets(record.stack_info)
        return True


class KopfLevels(logging.Filter):
    """kopf's routine successes to DEBUG, kopf's retried failures to WARNING."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("kopf"):
            return True
        if record.levelno == logging.INFO:
            message = record.getMessage()
            if (message.endswith("succeeded.") and any(
                f"'{name}'" in message for name in ROUTINE_HANDLERS
            )) or (message.startswith("Resuming is processed") and message.endswith(" 0 failed.")):
                record.levelno, record.levelname = logging.DEBUG, "DEBUG"
                return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        elif record.levelno == logging.ERROR and not record.exc_info:
            message = record.getMessage()
            if any(marker in message for marker in _KOPF_RETRIES) and "but will" not in message:
                record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def object_fields(record: logging.LogRecord) -> dict[str, str]:
    """namespace/name/kind/uid of the object a record is about: `extra={"object": ...}` (an
    `ObjectRef` or a mapping), else kopf's `k8s_ref`; empty when it is about none."""
    ref: Any = getattr(record, "object", None)
    if ref is None:
        ref = getattr(record, "k8s_ref", None)
    if ref is None:
        return {}
    fields: dict[str, str] = {}
    for key in ("namespace", "name", "kind", "uid"):
        value = ref.get(key) if isinstance(ref, Mapping) else getattr(ref, key, None)
        if value:
            fields[key] = str(value)
    return fields


class LineFormatter(logging.Formatter):
    """One line per record, `json` or `text`, with the object's fields when there is one."""

    def __init__(self, log_format: LogFormat = LogFormat.TEXT) -> None:
        super().__init__()
        self.log_format = LogFormat(log_format)

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        obj = object_fields(record)
        google = getattr(record, "google", None)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        problem = "\n".join(t for t in (record.exc_text, record.stack_info) if t)
        if self.log_format is LogFormat.JSON:
            doc: dict[str, Any] = {
                "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC)
                .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "level": record.levelname,
                "logger": record.name,
                "message": message,
                **obj,
            }
            if google:
                doc["google"] = str(google)
            if problem:
                doc["exception"] = problem
            return json.dumps(doc, ensure_ascii=False, default=str)
        where = ""
        if obj.get("name"):
            where = f"[{obj['namespace']}/{obj['name']}] " if obj.get("namespace") else (
                f"[{obj['name']}] ")
        line = f"{self.formatTime(record)} {record.levelname} {record.name}: {where}{message}"
        if google:
            line += f" (google: {google})"
        return f"{line}\n{problem}" if problem else line


def _format_from_env() -> LogFormat:
    value = os.environ.get("GCPCALL_LOG_FORMAT", "").strip()
    if not value:
        return LogFormat.TEXT
    try:
        return LogFormat(value.lower())
    except ValueError:
        raise SettingsError("GCPCALL_LOG_FORMAT", value, "one of text, json") from None


def line_handler(log_format: LogFormat | str, stream: TextIO | None = None
                 ) -> logging.Handler:
    """A handler writing our lines to `stream` (stderr): formatter, levels, redaction."""
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(LineFormatter(LogFormat(log_format)))
    handler.addFilter(KopfLevels())
    handler.addFilter(RedactSecrets())  # after KopfLevels: it reads the raw message
    return handler


def setup_logging(verbose: bool, log_format: LogFormat | str | None = None) -> None:
    """Configure the root logger once, at process start: one stderr `line_handler`.
    `log_format` None: $GCPCALL_LOG_FORMAT, else text."""
    handler = line_handler(log_format or _format_from_env())
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.captureWarnings(True)  # Python warnings as log lines too (one JSON line each)
