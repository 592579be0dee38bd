"""What the operator observed of a Google resource, as plain values.

Why plain values: `api/` may not import Google libraries, yet it builds status from what
Google reports. The gcp/ readers turn a fetched `Job`/`Task` proto into these frozen
dataclasses; status building and its tests then never touch a proto.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = [
    "RPC_CODE_NAMES",
    "NoOffset",
    "ObservedAttempt",
    "ObservedJob",
    "ObservedQueue",
    "ObservedTask",
    "code_for_http_status",
    "format_time",
    "parse_time",
    "rpc_code_name",
]

# google.rpc.Code, by number (api/ cannot import grpc to look them up).
RPC_CODE_NAMES = (
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
    "UNAUTHENTICATED",
)


# HTTP status -> google.rpc code, as Google maps them (AIP-193) and as Cloud Scheduler
# reports an HTTP target's answer.
_HTTP_CODES = {400: 3, 401: 16, 403: 7, 404: 5, 409: 10, 412: 9, 429: 8, 499: 1, 500: 13,
               501: 12, 502: 14, 503: 14, 504: 4}


def code_for_http_status(status: int) -> int:
    """The google.rpc code of an HTTP answer: 0 for 2xx, the AIP-193 code, else UNKNOWN."""
    if 200 <= status < 300:
        return 0
    if status in _HTTP_CODES:
        return _HTTP_CODES[status]
    return 3 if 400 <= status < 500 else 2


def rpc_code_name(code: int) -> str:
    return RPC_CODE_NAMES[code] if 0 <= code < len(RPC_CODE_NAMES) else f"CODE_{code}"


def format_time(when: datetime) -> str:
    """RFC 3339 in UTC with whole seconds, as Kubernetes writes `metav1.Time`.

    One format everywhere so that a value read back from the API server compares equal to
    the one we would write, and no status patch is sent for an unchanged time.
    """
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class NoOffset(ValueError):
    """A time without its offset, where one is required."""


def parse_time(value: str, *, assume_utc: bool = True) -> datetime:
    """An RFC 3339 time (`...Z` or with an offset; fractions to nanoseconds, as Google
    writes them, kept to microseconds) -> aware UTC. The one parser of the product.

    Raises ValueError for anything else; a value without an offset is taken as UTC, or
    refused with `NoOffset` when `assume_utc` is False.
    """
    parsed = datetime.fromisoformat(value.strip().replace("z", "Z"))
    if parsed.tzinfo is None:
        if not assume_utc:
            raise NoOffset(value)
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


@dataclass(frozen=True)
class ObservedJob:
    """A Cloud Scheduler job as last read. Times are aware datetimes or None."""

    name: str
    state: str  # ENABLED | PAUSED | DISABLED | UPDATE_FAILED | STATE_UNSPECIFIED
    description: str = ""
    next_run_time: datetime | None = None  # Job.schedule_time
    last_attempt_time: datetime | None = None
    status_code: int | None = None  # Job.status.code; None when Google reports no status
    status_message: str = ""
    user_update_time: datetime | None = None


@dataclass(frozen=True)
class ObservedAttempt:
    """One Cloud Tasks dispatch attempt. `code` is None while no response was seen."""

    dispatch_time: datetime
    schedule_time: datetime | None = None
    response_time: datetime | None = None
    code: int | None = None
    message: str = ""
    http_status: int | None = None  # known to the relay only


@dataclass(frozen=True)
class ObservedTask:
    """A Cloud Tasks task as last read."""

    name: str
    schedule_time: datetime | None = None
    create_time: datetime | None = None
    dispatch_count: int = 0
    response_count: int = 0
    first_attempt_time: datetime | None = None  # Task.first_attempt.dispatch_time
    last_attempt: ObservedAttempt | None = None


@dataclass(frozen=True)
class ObservedQueue:
    """What the GcpTask outcome rule needs to know of a Cloud Tasks queue."""

    name: str
    paused: bool = False
