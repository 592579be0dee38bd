"""Shared pieces of the emulator's "Google APIs" simulator: errors, routing, slow operations.

Why: the simulated APIs (Compute, Cloud Build, Dataflow; see `googleapis`) answer in
Google's JSON shapes, all have resources that must be declared before they exist, and all
hand out operations or jobs that finish later - after a time on the emulator's clock, after
a number of polls, with an error, or never. Those rules are written once here so the API
modules only say what differs.

Two error shapes exist at Google, and both are reproduced:
- Compute (the older "googleapi" shape, as captured from compute.googleapis.com, e.g. in
  GoogleCloudPlatform/magic-modules#4377): {"error": {"code": 404, "message": "The
  resource '...' was not found", "errors": [{"message", "domain": "global", "reason":
  "notFound"}]}} - no "status".
- The google.rpc shape of the newer APIs (Cloud Build, Dataflow; e.g. apache/beam#29441
  for Dataflow): {"error": {"code": 409, "message", "status": "ALREADY_EXISTS",
  "errors"?: [...]}}.
"""

from __future__ import annotations

import datetime
import http
import json
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "ApiCall",
    "ApiError",
    "Behavior",
    "Handler",
    "JsonObject",
    "LongRunning",
    "Router",
    "SimulatedApi",
    "SimulatorSettings",
    "compute_error",
    "exactly_one",
    "http_reason",
    "numeric_id",
    "rfc3339",
    "rpc_error",
    "string_field",
]

JsonObject = dict[str, Any]


class ApiError(Exception):
    """A refusal in Google's JSON error shape; the simulator answers `status` with `body`."""

    def __init__(self, status: int, body: JsonObject) -> None:
        super().__init__(json.dumps(body))
        self.status = status
        self.body = body


def compute_error(status: int, message: str, reason: str) -> ApiError:
    """Compute's error shape: code, message and errors[] with domain and reason."""
    return ApiError(
        status,
        {
            "error": {
                "code": status,
                "message": message,
                "errors": [{"message": message, "domain": "global", "reason": reason}],
            }
        },
    )


def rpc_error(
    status: int, status_name: str, message: str, *, reason: str | None = None
) -> ApiError:
    """The google.rpc shape: code, message, status (and errors[] when `reason` is given)."""
    error: JsonObject = {"code": status, "message": message}
    if reason is not None:
        error["errors"] = [{"message": message, "domain": "global", "reason": reason}]
    error["status"] = status_name
    return ApiError(status, {"error": error})


@dataclass(frozen=True)
class ApiCall:
    """One request to a simulated API, as its handler sees it."""

    method: str
    host: str
    path: str  # as the real host sees it, e.g. /compute/v1/projects/p/...
    query: Mapping[str, str]
    body: bytes
    email: str | None  # the caller, from the bearer token (None: anonymous)

    def json_object(self, *, required: bool = True) -> JsonObject:
        """The body as a JSON object; Google's 400 INVALID_ARGUMENT when it is not one."""
        if not self.body.strip():
            if required:
                raise rpc_error(400, "INVALID_ARGUMENT", "Request body is missing.")
            return {}
        try:
            value = json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as error:
            raise rpc_error(
                400, "INVALID_ARGUMENT", f"Invalid JSON payload received. {error}"
            ) from error
        if not isinstance(value, dict):
            raise rpc_error(
                400,
                "INVALID_ARGUMENT",
                "Invalid JSON payload received. Expected an object at the top level.",
            )
        return value


Handler = Callable[[ApiCall, Mapping[str, str]], Awaitable[JsonObject]]


class SimulatedApi(Protocol):
    """One simulated Google API (one host), as `googleapis.GoogleApis` serves it."""

    host: str
    scopes: frozenset[str]  # OAuth scopes any one of which the API accepts
    router: Router

    def reset(self) -> None: ...


@dataclass(frozen=True)
class _Route:
    method: str
    pattern: re.Pattern[str]
    rpc: str
    handler: Handler


class Router:
    """Method + path template ("/v1/projects/{project}/triggers/{trigger}:run") -> handler.

    A `{name}` matches one path segment (no "/"); matching is on the decoded path.
    """

    def __init__(self) -> None:
        self._routes: list[_Route] = []

    def add(self, method: str, template: str, rpc: str, handler: Handler) -> None:
        """Serve `method template` with `handler`; `rpc` names Google's method for the log."""
        regex = ""
        for literal, name in re.findall(r"([^{]*)(?:\{(\w+)\})?", template):
            regex += re.escape(literal)
            if name:
                regex += f"(?P<{name}>[^/]+?)"
        self._routes.append(_Route(method.upper(), re.compile(f"^{regex}$"), rpc, handler))

    def match(self, method: str, path: str) -> tuple[Handler, dict[str, str], str]:
        """(handler, path parameters, rpc name); Google's 404 when nothing matches."""
        for route in self._routes:
            found = route.pattern.match(path)
            if found is not None and route.method == method.upper():
                return route.handler, found.groupdict(), route.rpc
        raise rpc_error(404, "NOT_FOUND", f"Method not found: {method} {path}")


@dataclass(frozen=True)
class Behavior:
    """How a declared resource's operations (or jobs) end.

    - `done_after_seconds`: done this long after creation, on the emulator's clock
      (None: only polls finish it);
    - `done_after_polls`: done at the N-th read of the operation (get, wait), whichever
      of the two comes first;
    - `fail`: the operation ends done *with this error message* (None: it succeeds);
    - `never_done`: it never finishes (for timeout tests); wins over the others.

    JSON (admin routes): {"done_after_seconds": 2, "done_after_polls": null, "fail": null,
    "fail_after_polls": null, "never_done": false}; `fail_after_polls: N` is shorthand for
    `done_after_polls: N` plus a failure (`fail`, or a default message).
    """

    done_after_seconds: float | None = 2.0
    done_after_polls: int | None = None
    fail: str | None = None
    never_done: bool = False

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], default_failure: str) -> Behavior:
        """Parse the behaviour keys of a declaration; ValueError names a bad key."""
        seconds = doc.get("done_after_seconds", None if _has_polls(doc) else 2.0)
        if seconds is not None and (_not_number(seconds) or float(seconds) < 0):
            raise ValueError("done_after_seconds must be a non-negative number or null")
        polls = doc.get("done_after_polls")
        fail = doc.get("fail")
        fail_after = doc.get("fail_after_polls")
        if fail_after is not None:
            if polls is not None:
                raise ValueError("give done_after_polls or fail_after_polls, not both")
            polls, fail = fail_after, fail or default_failure
        if polls is not None and (not isinstance(polls, int) or isinstance(polls, bool)):
            raise ValueError("done_after_polls / fail_after_polls must be an integer")
        if polls is not None and polls < 1:
            raise ValueError("done_after_polls / fail_after_polls must be at least 1")
        if fail is not None and not isinstance(fail, str):
            raise ValueError("fail must be an error message (a string) or null")
        never = doc.get("never_done", False)
        if not isinstance(never, bool):
            raise ValueError("never_done must be true or false")
        return cls(
            done_after_seconds=None if seconds is None else float(seconds),
            done_after_polls=polls,
            fail=fail,
            never_done=never,
        )

    def to_json(self) -> JsonObject:
        """As the admin routes show it."""
        return {
            "done_after_seconds": self.done_after_seconds,
            "done_after_polls": self.done_after_polls,
            "fail": self.fail,
            "never_done": self.never_done,
        }


def _has_polls(doc: Mapping[str, Any]) -> bool:
    return doc.get("done_after_polls") is not None or doc.get("fail_after_polls") is not None


def _not_number(value: Any) -> bool:
    return not isinstance(value, int | float) or isinstance(value, bool)


@dataclass
class LongRunning:
    """The progress of one operation (or job) under a `Behavior`, read lazily.

    Nothing runs in the background: whoever reads the state passes the clock's now, so
    advancing the emulator's clock finishes operations at once.
    """

    behavior: Behavior
    created: float  # emulator clock, POSIX seconds
    polls: int = 0
    done_at: float | None = None

    def poll(self, now: float) -> None:
        """Count one read of the operation by a client (get, wait)."""
        self.polls += 1
        self.refresh(now)

    def refresh(self, now: float) -> None:
        """Become done if the behaviour says so by `now` (done never reverts)."""
        behavior = self.behavior
        if self.done_at is not None or behavior.never_done:
            return
        due = self.due_at()
        if due is not None and now >= due:
            self.done_at = due
        elif behavior.done_after_polls is not None and self.polls >= behavior.done_after_polls:
            self.done_at = now

    def due_at(self) -> float | None:
        """When time alone finishes it (None: never, or only polls)."""
        if self.behavior.never_done or self.behavior.done_after_seconds is None:
            return None
        return self.created + self.behavior.done_after_seconds

    def done(self, now: float) -> bool:
        """Is it finished by `now`?"""
        self.refresh(now)
        return self.done_at is not None

    @property
    def failed(self) -> bool:
        """Does (or will) it end with an error?"""
        return self.behavior.fail is not None

    def fraction(self, now: float) -> float:
        """Progress 0..1 (time-based; 0 while only polls can finish it)."""
        if self.done(now):
            return 1.0
        seconds = self.behavior.done_after_seconds
        if self.behavior.never_done or not seconds:
            return 0.0
        return min(0.99, max(0.0, (now - self.created) / seconds))


def rfc3339(seconds: float, *, digits: int = 3, zulu: bool = False) -> str:
    """POSIX seconds as RFC 3339 in UTC, with `digits` fractional digits.

    Compute writes "2017-09-18T05:56:49.227-07:00" (milliseconds and an offset; UTC here:
    "+00:00"); the google.protobuf Timestamp JSON of Cloud Build and Dataflow writes
    "2022-02-16T09:15:13.997352Z" (`zulu=True`, up to nanoseconds; we keep microseconds).
    """
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if digits:
        text += "." + f"{moment.microsecond:06d}"[:digits]
    return text + ("Z" if zulu else "+00:00")


def numeric_id() -> str:
    """A server-defined unique id, as Compute's 19-digit decimal (uint64) ids."""
    return str(secrets.randbelow(9 * 10**18) + 10**18)


def http_reason(status: int) -> str:
    """Compute's httpErrorMessage for a status: the reason phrase upper-cased ("NOT FOUND")."""
    try:
        return http.HTTPStatus(status).phrase.upper()
    except ValueError:
        return "ERROR"


@dataclass
class SimulatorSettings:
    """Knobs of the whole simulator (admin: GET/POST /emulator/v1/googleapis/settings)."""

    # Compute's operations.wait returns when the operation is DONE "or for the request to
    # approach the 2 minute deadline"; here at most this many seconds of the emulator clock.
    max_wait_seconds: float = 2.0


def string_field(doc: Mapping[str, Any], key: str, *, default: str | None = None) -> str:
    """A required (or defaulted) non-empty string of a declaration; ValueError otherwise."""
    value = doc.get(key, default)
    if not isinstance(value, str) or not value or "/" in value:
        raise ValueError(f"{key} must be a non-empty name without '/'")
    return value


def exactly_one(doc: Mapping[str, Any], keys: Sequence[str]) -> str:
    """The one of `keys` the declaration gives; ValueError when none or several are given."""
    given = [key for key in keys if doc.get(key) is not None]
    if len(given) != 1:
        raise ValueError(f"give exactly one of {', '.join(keys)}")
    return given[0]
