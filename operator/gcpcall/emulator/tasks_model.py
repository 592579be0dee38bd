"""The rules of Cloud Tasks v2 that need no state: names, defaults, limits, backoff, codes.

Why: the emulator must refuse what Cloud Tasks refuses and compute what Cloud Tasks
computes (retry delays, the gRPC code an HTTP answer maps to), and these rules are easiest
to get right - and to test - as pure functions, apart from the queues and the dispatch loop.
Each rule cites the part of the Cloud Tasks API reference it follows.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

import grpc
from google.cloud.tasks_v2 import types as tasks_types
from google.protobuf import field_mask_pb2

__all__ = [
    "DEFAULT_DISPATCH_DEADLINE",
    "MAX_DISPATCH_DEADLINE",
    "MAX_LIST_QUEUES_PAGE",
    "MAX_LIST_TASKS_PAGE",
    "MAX_SCHEDULE_AHEAD",
    "MAX_TASK_SIZE",
    "MIN_DISPATCH_DEADLINE",
    "QUEUE_OUTPUT_ONLY_PATHS",
    "QueueName",
    "RetryPolicy",
    "TaskName",
    "TasksError",
    "apply_queue_defaults",
    "backoff_seconds",
    "burst_size",
    "decode_page_token",
    "encode_page_token",
    "http_method_name",
    "http_status_to_code",
    "parse_location",
    "parse_queue_name",
    "parse_task_name",
    "queue_filter_state",
    "retry_policy",
    "validate_queue_config",
    "validate_update_mask",
]

# The message classes the service works with, as raw protobuf classes.
QueuePb: Any = tasks_types.Queue.pb()
RetryConfigPb: Any = tasks_types.RetryConfig.pb()

# Task.dispatch_deadline: "For HTTP tasks, the default is 10 minutes. The deadline must be in
# the interval [15 seconds, 30 minutes]."
DEFAULT_DISPATCH_DEADLINE = 600.0
MIN_DISPATCH_DEADLINE = 15.0
MAX_DISPATCH_DEADLINE = 1800.0
# Quotas and limits: "Maximum schedule time for a task: 30 days from current date and time."
MAX_SCHEDULE_AHEAD = 30 * 86400.0
# Quotas and limits: "Maximum task size: 1MB".
MAX_TASK_SIZE = 1024 * 1024
# ListQueuesRequest.page_size: "The maximum page size is 9800." ListTasksRequest: 1000.
MAX_LIST_QUEUES_PAGE = 9800
MAX_LIST_TASKS_PAGE = 1000
# HttpRequest.url: "The maximum allowed URL length is 2083 characters after encoding."
MAX_URL_LENGTH = 2083

# RateLimits / RetryConfig defaults, as the reference states them.
DEFAULT_MAX_DISPATCHES_PER_SECOND = 500.0
MAX_MAX_DISPATCHES_PER_SECOND = 500.0
DEFAULT_MAX_CONCURRENT_DISPATCHES = 1000
MAX_MAX_CONCURRENT_DISPATCHES = 5000
MAX_BURST_SIZE_CAP = 100
DEFAULT_MAX_ATTEMPTS = 100
DEFAULT_MIN_BACKOFF = 0.1
DEFAULT_MAX_BACKOFF = 3600.0
DEFAULT_MAX_DOUBLINGS = 16

# Queue fields UpdateQueue's mask may name but that the caller cannot change; Cloud Tasks
# computes them (state changes through Pause/Resume, purge_time through Purge).
QUEUE_OUTPUT_ONLY_PATHS = frozenset({"name", "state", "purge_time", "rate_limits.max_burst_size"})

# Resource name pieces (Queue.name / Task.name in the reference):
# PROJECT_ID: letters, numbers, hyphens, colons, periods. LOCATION_ID: a canonical location.
# QUEUE_ID: letters, numbers, hyphens, at most 100. TASK_ID: letters, numbers, hyphens,
# underscores, at most 500.
_PROJECT = r"[A-Za-z0-9\-:.]+"
_LOCATION = r"[A-Za-z0-9\-]+"
_QUEUE_ID = r"[A-Za-z0-9\-]{1,100}"
_TASK_ID = r"[A-Za-z0-9_\-]{1,500}"
_LOCATION_RE = re.compile(rf"projects/({_PROJECT})/locations/({_LOCATION})")
_QUEUE_RE = re.compile(rf"projects/({_PROJECT})/locations/({_LOCATION})/queues/({_QUEUE_ID})")
_TASK_RE = re.compile(
    rf"projects/({_PROJECT})/locations/({_LOCATION})/queues/({_QUEUE_ID})/tasks/({_TASK_ID})"
)
_STATE_FILTER_RE = re.compile(r"\s*state\s*[:=]\s*([A-Za-z_]+)\s*")


class TasksError(Exception):
    """A refusal with the gRPC code and message Cloud Tasks would answer with."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _invalid(message: str) -> TasksError:
    return TasksError(grpc.StatusCode.INVALID_ARGUMENT, message)


@dataclass(frozen=True)
class QueueName:
    """`projects/{project}/locations/{location}/queues/{queue_id}`."""

    project: str
    location: str
    queue_id: str

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.location}"

    def __str__(self) -> str:
        return f"{self.parent}/queues/{self.queue_id}"


@dataclass(frozen=True)
class TaskName:
    """`projects/{project}/locations/{location}/queues/{queue_id}/tasks/{task_id}`."""

    queue: QueueName
    task_id: str

    def __str__(self) -> str:
        return f"{self.queue}/tasks/{self.task_id}"


def parse_location(name: str) -> tuple[str, str]:
    """(project, location) of `projects/{p}/locations/{l}`; INVALID_ARGUMENT otherwise."""
    match = _LOCATION_RE.fullmatch(name)
    if match is None:
        raise _invalid(
            f'Invalid resource field value in the request: "{name}" is not '
            '"projects/PROJECT_ID/locations/LOCATION_ID".'
        )
    return match.group(1), match.group(2)


def parse_queue_name(name: str) -> QueueName:
    """The parts of a queue name; INVALID_ARGUMENT when it breaks the naming rules."""
    match = _QUEUE_RE.fullmatch(name)
    if match is None:
        raise _invalid(
            f'Queue name must be formatted: "projects/<PROJECT_ID>/locations/<LOCATION_ID>'
            f'/queues/<QUEUE_ID>" (QUEUE_ID: [A-Za-z0-9-]{{1,100}}); got "{name}".'
        )
    return QueueName(match.group(1), match.group(2), match.group(3))


def parse_task_name(name: str) -> TaskName:
    """The parts of a task name; INVALID_ARGUMENT when it breaks the naming rules."""
    match = _TASK_RE.fullmatch(name)
    if match is None:
        raise _invalid(
            'Task name must be formatted: "projects/<PROJECT_ID>/locations/<LOCATION_ID>'
            '/queues/<QUEUE_ID>/tasks/<TASK_ID>" (TASK_ID: [A-Za-z0-9_-]{1,500}); '
            f'got "{name}".'
        )
    queue = QueueName(match.group(1), match.group(2), match.group(3))
    return TaskName(queue, match.group(4))


def burst_size(max_dispatches_per_second: float) -> int:
    """RateLimits.max_burst_size, which is output only and derived from the rate.

    The reference only says Cloud Tasks picks it from max_dispatches_per_second; a queue at
    the default 500/s reports 100. We allow one second's worth of dispatches, capped at 100.
    """
    whole = int(max_dispatches_per_second)
    return max(
        1, min(MAX_BURST_SIZE_CAP, whole if whole == max_dispatches_per_second else whole + 1)
    )


def validate_queue_config(queue: Any) -> None:
    """INVALID_ARGUMENT for rate limits and retry settings outside the reference's bounds."""
    limits = queue.rate_limits
    if limits.max_dispatches_per_second < 0:
        raise _invalid("RateLimits.max_dispatches_per_second must not be negative.")
    if limits.max_dispatches_per_second > MAX_MAX_DISPATCHES_PER_SECOND:
        raise _invalid("RateLimits.max_dispatches_per_second must be at most 500.")
    if limits.max_concurrent_dispatches < 0:
        raise _invalid("RateLimits.max_concurrent_dispatches must not be negative.")
    if limits.max_concurrent_dispatches > MAX_MAX_CONCURRENT_DISPATCHES:
        raise _invalid("RateLimits.max_concurrent_dispatches must be at most 5000.")
    validate_retry_config(queue.retry_config, "Queue.retry_config")


def validate_retry_config(retry: Any, where: str) -> None:
    """INVALID_ARGUMENT for a RetryConfig the reference does not allow."""
    if retry.max_attempts < -1:
        raise _invalid(f"{where}.max_attempts must be -1 (unlimited) or more.")
    if retry.max_doublings < 0:
        raise _invalid(f"{where}.max_doublings must not be negative.")
    for field_name in ("max_retry_duration", "min_backoff", "max_backoff"):
        if retry.HasField(field_name) and _seconds(getattr(retry, field_name)) < 0:
            raise _invalid(f"{where}.{field_name} must not be negative.")
    if (
        retry.HasField("min_backoff")
        and retry.HasField("max_backoff")
        and _seconds(retry.min_backoff) > _seconds(retry.max_backoff)
    ):
        raise _invalid(f"{where}.min_backoff must not be greater than max_backoff.")


def apply_queue_defaults(queue: Any) -> None:
    """Fill what Cloud Tasks fills in a stored queue: rate limits and retry defaults.

    Proto3 zero values read as "unspecified", so max_attempts 0 and max_doublings 0 take
    the defaults (100 and 16), as they do in Cloud Tasks.
    """
    limits = queue.rate_limits
    if limits.max_dispatches_per_second == 0:
        limits.max_dispatches_per_second = DEFAULT_MAX_DISPATCHES_PER_SECOND
    if limits.max_concurrent_dispatches == 0:
        limits.max_concurrent_dispatches = DEFAULT_MAX_CONCURRENT_DISPATCHES
    limits.max_burst_size = burst_size(limits.max_dispatches_per_second)
    retry = queue.retry_config
    if retry.max_attempts == 0:
        retry.max_attempts = DEFAULT_MAX_ATTEMPTS
    if retry.max_doublings == 0:
        retry.max_doublings = DEFAULT_MAX_DOUBLINGS
    if not retry.HasField("min_backoff"):
        retry.min_backoff.FromNanoseconds(int(DEFAULT_MIN_BACKOFF * 1e9))
    if not retry.HasField("max_backoff"):
        retry.max_backoff.FromSeconds(int(DEFAULT_MAX_BACKOFF))


def _seconds(duration: Any) -> float:
    return float(duration.seconds) + float(duration.nanos) / 1e9


@dataclass(frozen=True)
class RetryPolicy:
    """The RetryConfig in force for one task, with every default resolved."""

    max_attempts: int  # -1: unlimited
    max_retry_duration: float  # 0: unlimited
    min_backoff: float
    max_backoff: float
    max_doublings: int

    def exhausted(self, attempts: int, since_first_attempt: float) -> bool:
        """True when a task that just failed its `attempts`-th attempt gets no more.

        RetryConfig.max_retry_duration: "Once max_retry_duration time has passed *and* the
        task has been attempted max_attempts times, no further attempts will be made and
        the task will be deleted." A limit that is unlimited (-1, or 0 for the duration)
        does not hold the task back on its own; with both unlimited the task never stops.
        """
        attempts_unlimited = self.max_attempts == -1
        duration_unlimited = self.max_retry_duration <= 0
        if attempts_unlimited and duration_unlimited:
            return False
        attempts_done = attempts_unlimited or attempts >= self.max_attempts
        duration_done = duration_unlimited or since_first_attempt >= self.max_retry_duration
        return attempts_done and duration_done


def retry_policy(queue_retry: Any, task_retry: Any | None = None) -> RetryPolicy:
    """The effective policy: the task's own RetryConfig (Task.retry_config, "if present,
    this overrides the Queue.retry_config") field by field over the queue's, then defaults."""
    sources = [queue_retry] if task_retry is None else [task_retry, queue_retry]

    def scalar(field_name: str, default: int) -> int:
        for source in sources:
            value = int(getattr(source, field_name))
            if value:
                return value
        return default

    def duration(field_name: str, default: float) -> float:
        for source in sources:
            if source.HasField(field_name):
                return _seconds(getattr(source, field_name))
        return default

    return RetryPolicy(
        max_attempts=scalar("max_attempts", DEFAULT_MAX_ATTEMPTS),
        max_retry_duration=duration("max_retry_duration", 0.0),
        min_backoff=duration("min_backoff", DEFAULT_MIN_BACKOFF),
        max_backoff=duration("max_backoff", DEFAULT_MAX_BACKOFF),
        max_doublings=scalar("max_doublings", DEFAULT_MAX_DOUBLINGS),
    )


def backoff_seconds(policy: RetryPolicy, retry_number: int) -> float:
    """The delay before retry number `retry_number` (1 for the retry after the 1st attempt).

    RetryConfig.max_doublings: "A task's retry interval starts at min_backoff, then doubles
    max_doublings times, then increases linearly, and finally retries at intervals of
    max_backoff up to max_attempts times. For example, if min_backoff is 10s, max_backoff
    is 300s, and max_doublings is 3, then the task will first be retried in 10s. The retry
    interval will double three times, and then increase linearly by 2^3 * 10s. Finally, the
    task will retry at intervals of max_backoff ... 10s, 20s, 40s, 80s, 160s, 240s, 300s,
    300s, ...."
    """
    if retry_number < 1:
        raise ValueError("retry numbers start at 1")
    doublings = retry_number - 1
    if doublings <= policy.max_doublings:
        interval = policy.min_backoff * (2.0**doublings)
    else:
        step = policy.min_backoff * (2.0**policy.max_doublings)
        interval = step * (retry_number - policy.max_doublings)
    return min(interval, policy.max_backoff)


# HTTP status -> google.rpc.Code for Attempt.response_status, following google/rpc/code.proto's
# HTTP mapping (the codes Cloud Tasks reports, e.g. "NOT_FOUND(5): HTTP status code 404").
_HTTP_TO_CODE: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.ALREADY_EXISTS,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    500: grpc.StatusCode.INTERNAL,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def http_status_to_code(status: int) -> grpc.StatusCode:
    """The google.rpc code an attempt's HTTP status is reported as."""
    if 200 <= status <= 299:
        return grpc.StatusCode.OK
    return _HTTP_TO_CODE.get(status, grpc.StatusCode.UNKNOWN)


_METHODS = {
    tasks_types.HttpMethod.POST: "POST",
    tasks_types.HttpMethod.GET: "GET",
    tasks_types.HttpMethod.HEAD: "HEAD",
    tasks_types.HttpMethod.PUT: "PUT",
    tasks_types.HttpMethod.DELETE: "DELETE",
    tasks_types.HttpMethod.PATCH: "PATCH",
    tasks_types.HttpMethod.OPTIONS: "OPTIONS",
}


def http_method_name(method: int) -> str:
    """The HTTP verb of an HttpMethod value (POST when unspecified, the API's default)."""
    return _METHODS.get(tasks_types.HttpMethod(method or tasks_types.HttpMethod.POST), "POST")


def validate_update_mask(mask: Any) -> list[str]:
    """The mask's paths the update applies; INVALID_ARGUMENT for a path Queue lacks.

    Output-only paths (state, purge_time, max_burst_size) are accepted and ignored: Cloud
    Tasks computes those fields, and the reference says state is changed only by
    PauseQueue/ResumeQueue.
    """
    paths = list(mask.paths)
    checker = field_mask_pb2.FieldMask(paths=paths)
    if not checker.IsValidForDescriptor(QueuePb.DESCRIPTOR):
        raise _invalid(f"update_mask has a path that Queue does not have: {paths}")
    return [path for path in paths if path not in QUEUE_OUTPUT_ONLY_PATHS]


def queue_filter_state(filter_text: str) -> int | None:
    """The Queue.State a ListQueues filter asks for ("state: PAUSED"); None for no filter."""
    if not filter_text.strip():
        return None
    match = _STATE_FILTER_RE.fullmatch(filter_text)
    if match is None:
        raise _invalid(f'Unsupported filter "{filter_text}"; only "state: <STATE>" is known.')
    state_name = match.group(1).upper()
    try:
        return int(QueuePb.State.Value(state_name))
    except ValueError:
        raise _invalid(f'Unknown queue state "{match.group(1)}" in filter.') from None


def encode_page_token(scope: str, last_name: str) -> str:
    """An opaque page token: resume listing `scope` after `last_name`."""
    return base64.urlsafe_b64encode(f"{scope}\n{last_name}".encode()).decode("ascii")


def decode_page_token(scope: str, token: str) -> str:
    """The name a page token resumes after; INVALID_ARGUMENT for a foreign or bad token."""
    try:
        raw = base64.urlsafe_b64decode(token.encode("ascii")).decode()
    except (binascii.Error, UnicodeError, ValueError):
        raise _invalid("Invalid page_token.") from None
    token_scope, _, last_name = raw.partition("\n")
    if token_scope != scope or not last_name:
        raise _invalid("Invalid page_token: it belongs to another listing.")
    return last_name
