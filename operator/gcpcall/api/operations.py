"""Long-running operations in a relayed call's response, recognised with no per-API setting.

Why pure: what counts as an operation, where it is polled and when it is done must be
Google's rules, and tested as such. The shapes (checked against the API references):

- google.longrunning.Operation (Cloud Build, Cloud Run, most newer APIs): `name`, and `done`
  (proto3 JSON leaves it out while false), `metadata`, then `error` (a google.rpc.Status:
  `code`, `message`) or `response`. It is polled with `GET https://<same host>/<same API
  version>/<name>` (the `operations.get` method of the API that answered).
- Compute Engine (`kind: compute#operation`, zonal, regional or global) and Cloud SQL
  (`kind: sql#operation`): polled at `selfLink`; done when `status` is `DONE`; failed when
  `error.errors[]` is present (Compute adds `httpErrorStatusCode`/`httpErrorMessage`).
- Anything else is a plain response.

A token travels with every poll, so a poll URL must be on the host the call went to, over
https; a response that claims to be an operation without a usable name or selfLink is a
plain response, with a note saying why.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from gcpcall.api.observed import code_for_http_status

__all__ = ["MAX_RESPONSE_CHARS", "Found", "OperationState", "detect", "read_state", "trim"]

MAX_RESPONSE_CHARS = 4096
_NAME = re.compile(r"^[A-Za-z0-9._~:@=+-]+(/[A-Za-z0-9._~:@=+-]+)*$")
_VERSION = re.compile(r"^v\d+[a-z0-9]*$")
_SELF_LINK_KINDS = ("compute#operation", "sql#operation")


@dataclass(frozen=True)
class Found:
    style: str  # "longrunning" | "compute" | "sql"
    name: str
    poll_url: str


@dataclass(frozen=True)
class OperationState:
    done: bool
    error_code: int | None = None
    error_message: str = ""
    response: Mapping[str, Any] | None = None


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


def detect(call_uri: str, body: bytes) -> Found | str | None:
    """The operation a 2xx response started; a note when it claims one unusably; None for a
    plain response."""
    doc = _json(body)
    if not isinstance(doc, dict):
        return None
    call = urlsplit(call_uri)
    kind = doc.get("kind")
    if kind in _SELF_LINK_KINDS:
        link = doc.get("selfLink")
        if not isinstance(link, str) or len(link) > 4096:
            return f"the response is a {kind} without a selfLink to poll"
        parts = urlsplit(link)
        if parts.scheme != "https" or parts.hostname != call.hostname:
            return (f"the {kind}'s selfLink is not on {call.hostname} over https; it is not "
                    "polled (the poll would carry the object's token elsewhere)")
        name = doc.get("name") if isinstance(doc.get("name"), str) else link
        return Found("compute" if kind == "compute#operation" else "sql", str(name), link)
    if isinstance(kind, str) or not ("done" in doc or "metadata" in doc):
        return None
    name = doc.get("name")
    if not isinstance(name, str) or len(name) > 1024 or not _NAME.match(name) or ".." in name:
        return "the response looks like a long-running operation but has no usable name"
    version = (call.path.strip("/").split("/") or [""])[0]
    if not _VERSION.match(version):
        return (f"the response looks like a long-running operation, but {call.path} names no "
                "API version to poll it with")
    return Found("longrunning", name, f"https://{call.netloc}/{version}/{name}")


def trim(value: Any) -> Mapping[str, Any]:
    """A response for status: as it is if small, else its JSON text cut to a few KB."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    if len(text) <= MAX_RESPONSE_CHARS and isinstance(value, dict):
        return value
    return {"truncated": text[: MAX_RESPONSE_CHARS - 100]}


def read_state(style: str, body: bytes) -> OperationState | None:
    """The state a poll read; None when the answer is not that operation at all."""
    doc = _json(body)
    if not isinstance(doc, dict):
        return None
    if style in ("compute", "sql"):
        if "status" not in doc:
            return None
        errors = ((doc.get("error") or {}).get("errors") or []) if isinstance(
            doc.get("error"), dict) else []
        if errors:
            first = errors[0] if isinstance(errors[0], dict) else {}
            http = doc.get("httpErrorStatusCode")
            code = code_for_http_status(int(http)) if isinstance(http, int) else 2
            head = str(doc.get("httpErrorMessage") or first.get("code") or "")
            text = str(first.get("message") or "")
            message = f"{head}: {text}" if head and text else head or text
            return OperationState(True, code or 2, message[:1024])
        if doc.get("status") == "DONE":
            return OperationState(True, response=trim(doc))
        return OperationState(False)
    if doc.get("done") is not True:
        return OperationState(False)
    error = doc.get("error")
    if isinstance(error, dict):
        raw = error.get("code")
        return OperationState(True, raw if isinstance(raw, int) and raw else 2,
                              str(error.get("message") or "")[:1024])
    response = doc.get("response")
    return OperationState(True, response=trim(response if response is not None else {}))
