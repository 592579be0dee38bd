"""Cloud Scheduler's rules as pure functions: names, job validation, cron, backoff, codes.

Why: these are the parts of Cloud Scheduler's behaviour the API reference states
precisely (job id syntax, allowed values, defaults, the retry interval sequence, which
gRPC code an HTTP answer becomes). Keeping them pure makes them testable on their own and
keeps the service module about RPCs and time.

Choices where the reference is silent (each one is what the emulator does, on purpose):
- Only unix-cron schedules with exactly five fields are accepted (no "every 5 minutes").
- Only `http_target` jobs are accepted; App Engine and Pub/Sub targets get UNIMPLEMENTED.
- The stored job carries the defaults the API reports back: `retry_config` (retry_count 0,
  max_retry_duration 0s, min_backoff 5s, max_backoff 3600s, max_doublings 5),
  `attempt_deadline` 180s, and the header `User-Agent: Google-Cloud-Scheduler`.
- HTTP answers map to codes as Google's HTTP/gRPC mapping does: 400 INVALID_ARGUMENT,
  401 UNAUTHENTICATED, 403 PERMISSION_DENIED, 404 NOT_FOUND, 409 ABORTED, 412
  FAILED_PRECONDITION, 416 OUT_OF_RANGE, 429 RESOURCE_EXHAUSTED, 499 CANCELLED, other 4xx
  FAILED_PRECONDITION; 500 INTERNAL, 501 UNIMPLEMENTED, 502/503 UNAVAILABLE, 504
  DEADLINE_EXCEEDED, other 5xx UNKNOWN; no answer in time DEADLINE_EXCEEDED; no connection
  UNAVAILABLE.
"""

from __future__ import annotations

import datetime
import re
import zoneinfo
from dataclasses import dataclass

import grpc
from croniter import croniter

__all__ = [
    "DEFAULT_ATTEMPT_DEADLINE",
    "DEFAULT_MAX_BACKOFF",
    "DEFAULT_MAX_DOUBLINGS",
    "DEFAULT_MIN_BACKOFF",
    "DEFAULT_OAUTH_SCOPE",
    "JobName",
    "RetryPolicy",
    "code_for_http_status",
    "cron_next",
    "cron_previous",
    "parse_job_name",
    "parse_location",
    "time_zone",
    "validate_schedule",
]

DEFAULT_ATTEMPT_DEADLINE = 180.0
MIN_ATTEMPT_DEADLINE = 15.0
MAX_ATTEMPT_DEADLINE = 30 * 60.0
DEFAULT_MIN_BACKOFF = 5.0
DEFAULT_MAX_BACKOFF = 3600.0
DEFAULT_MAX_DOUBLINGS = 5
MAX_RETRY_COUNT = 5
DEFAULT_OAUTH_SCOPE = "https://www.googleapis.com/auth/cloud-platform"

_PROJECT = r"[A-Za-z0-9:.\-]+"
_LOCATION = r"[A-Za-z0-9\-]+"
_LOCATION_RE = re.compile(rf"projects/(?P<project>{_PROJECT})/locations/(?P<location>{_LOCATION})")
_JOB_RE = re.compile(
    rf"projects/(?P<project>{_PROJECT})/locations/(?P<location>{_LOCATION})"
    r"/jobs/(?P<job>[^/]*)"
)
_JOB_ID_RE = re.compile(r"[A-Za-z0-9_\-]{1,500}")
_CRON_FIELD_RE = re.compile(r"[0-9A-Za-z*,/\-]+")


class InvalidArgument(ValueError):
    """The request breaks a rule of the API (the RPC answers INVALID_ARGUMENT)."""


@dataclass(frozen=True)
class JobName:
    """A parsed `projects/{p}/locations/{l}/jobs/{id}`."""

    project: str
    location: str
    job_id: str

    @property
    def parent(self) -> str:
        """`projects/{p}/locations/{l}`."""
        return f"projects/{self.project}/locations/{self.location}"

    def __str__(self) -> str:
        return f"{self.parent}/jobs/{self.job_id}"


def parse_location(parent: str) -> tuple[str, str]:
    """(project, location) of `projects/{p}/locations/{l}`; InvalidArgument otherwise."""
    match = _LOCATION_RE.fullmatch(parent)
    if match is None:
        raise InvalidArgument(f"invalid location name {parent!r}")
    return match["project"], match["location"]


def parse_job_name(name: str) -> JobName:
    """A job name's parts; InvalidArgument when the name or its job id is malformed."""
    match = _JOB_RE.fullmatch(name)
    if match is None:
        raise InvalidArgument(f"invalid job name {name!r}")
    if _JOB_ID_RE.fullmatch(match["job"]) is None:
        raise InvalidArgument(
            f"invalid job id {match['job']!r}: letters, numbers, hyphens and underscores,"
            " at most 500 characters"
        )
    return JobName(match["project"], match["location"], match["job"])


def time_zone(name: str) -> zoneinfo.ZoneInfo:
    """The tz database zone a job names ("" and any case of "utc" mean UTC)."""
    if name == "" or name.lower() == "utc":
        return zoneinfo.ZoneInfo("UTC")
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as error:
        raise InvalidArgument(f"invalid time zone {name!r}") from error


def validate_schedule(schedule: str) -> None:
    """Accept a five-field unix-cron expression; InvalidArgument otherwise."""
    fields = schedule.split()
    if len(fields) != 5 or not all(_CRON_FIELD_RE.fullmatch(field) for field in fields):
        raise InvalidArgument(f"invalid schedule {schedule!r}: a five-field unix-cron expected")
    if not croniter.is_valid(" ".join(fields)):
        raise InvalidArgument(f"invalid schedule {schedule!r}")


def cron_next(
    schedule: str, zone: zoneinfo.ZoneInfo, after: datetime.datetime
) -> datetime.datetime:
    """The first time strictly after `after` the schedule fires, read in `zone`, as UTC."""
    start = after.astimezone(zone)
    moment: datetime.datetime = croniter(schedule, start).get_next(datetime.datetime)
    return moment.astimezone(datetime.UTC)


def cron_previous(
    schedule: str, zone: zoneinfo.ZoneInfo, at_or_before: datetime.datetime
) -> datetime.datetime:
    """The last time at or before `at_or_before` the schedule fires, as UTC."""
    start = (at_or_before + datetime.timedelta(microseconds=1)).astimezone(zone)
    moment: datetime.datetime = croniter(schedule, start).get_prev(datetime.datetime)
    return moment.astimezone(datetime.UTC)


@dataclass(frozen=True)
class RetryPolicy:
    """A job's effective retry_config and attempt deadline, in seconds."""

    retry_count: int = 0
    max_retry_duration: float = 0.0
    min_backoff: float = DEFAULT_MIN_BACKOFF
    max_backoff: float = DEFAULT_MAX_BACKOFF
    max_doublings: int = DEFAULT_MAX_DOUBLINGS
    attempt_deadline: float = DEFAULT_ATTEMPT_DEADLINE

    def validate(self) -> None:
        """InvalidArgument for values the API refuses."""
        if not 0 <= self.retry_count <= MAX_RETRY_COUNT:
            raise InvalidArgument("retry_count must be within 0..5")
        if min(self.max_retry_duration, self.min_backoff, self.max_backoff) < 0:
            raise InvalidArgument("retry durations must not be negative")
        if self.max_doublings < 0:
            raise InvalidArgument("max_doublings must not be negative")
        if self.min_backoff > self.max_backoff:
            raise InvalidArgument("min_backoff_duration must not exceed max_backoff_duration")
        if not MIN_ATTEMPT_DEADLINE <= self.attempt_deadline <= MAX_ATTEMPT_DEADLINE:
            raise InvalidArgument("attempt_deadline must be within [15 seconds, 30 minutes]")

    def backoff(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (0 is the first retry).

        The interval starts at min_backoff, doubles max_doublings times, then grows
        linearly by the last doubled interval, capped at max_backoff: with 10s, 300s and 3
        doublings the retries come after 10, 20, 40, 80, 160, 240, 300, 300... seconds.
        """
        if retry <= self.max_doublings:
            interval = self.min_backoff * 2**retry
        else:
            step = self.min_backoff * 2**self.max_doublings
            interval = step * (retry - self.max_doublings + 1)
        return float(min(interval, self.max_backoff))

    def may_retry(self, retries_done: int, elapsed: float) -> bool:
        """Whether another retry is allowed after `retries_done` retries and `elapsed` s.

        retry_count 0 means no retry. Otherwise the job is retried until both limits are
        reached: retry_count retries and, when set, max_retry_duration since the first try.
        """
        if self.retry_count == 0:
            return False
        if retries_done < self.retry_count:
            return True
        return self.max_retry_duration > 0 and elapsed < self.max_retry_duration


def code_for_http_status(status: int) -> grpc.StatusCode:
    """The code a job attempt's status gets for an HTTP answer."""
    if 200 <= status < 300:
        return grpc.StatusCode.OK
    exact = _HTTP_CODES.get(status)
    if exact is not None:
        return exact
    if 400 <= status < 500:
        return grpc.StatusCode.FAILED_PRECONDITION
    return grpc.StatusCode.UNKNOWN


_HTTP_CODES: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.ABORTED,
    412: grpc.StatusCode.FAILED_PRECONDITION,
    416: grpc.StatusCode.OUT_OF_RANGE,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    500: grpc.StatusCode.INTERNAL,
    501: grpc.StatusCode.UNIMPLEMENTED,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
