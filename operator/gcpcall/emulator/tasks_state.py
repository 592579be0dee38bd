"""What the Cloud Tasks emulator remembers about queues, tasks and their attempts.

Why: the RPC layer answers from these records, the dispatch loop changes them, and tests
read the attempt history through the admin API - also after Cloud Tasks semantics have
deleted the task. Keeping the records and their rendering into the API's messages in one
place means the RPCs and the admin API always tell the same story.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.cloud.tasks_v2 import types as tasks_types
from google.protobuf import timestamp_pb2

from gcpcall.emulator.tasks_model import QueueName, TaskName, burst_size

__all__ = [
    "AttemptPb",
    "AttemptRecord",
    "QueuePb",
    "QueueRecord",
    "TaskHistory",
    "TaskPb",
    "TaskRecord",
    "micros",
    "set_time",
]

QueuePb: Any = tasks_types.Queue.pb()
TaskPb: Any = tasks_types.Task.pb()
AttemptPb: Any = tasks_types.Attempt.pb()

_BASIC = int(tasks_types.Task.View.BASIC)
_sequence = itertools.count()


def micros(seconds: float) -> float:
    """`seconds` rounded to the microsecond, the precision of the API's timestamps.

    Schedule times are kept so, and the X-CloudTasks-TaskETA header then shows exactly
    the schedule_time that GetTask reports.
    """
    return round(seconds * 1e6) / 1e6


def set_time(target: Any, seconds: float) -> None:
    """Write POSIX `seconds` into a Timestamp, truncated to the microsecond as the API does."""
    target.FromMicroseconds(round(seconds * 1e6))


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    set_time(stamp, seconds)
    return str(stamp.ToJsonString())


@dataclass
class AttemptRecord:
    """One dispatch of a task and what came of it."""

    number: int  # 1 for the first attempt
    schedule_time: float
    dispatch_time: float
    forced: bool = False  # dispatched by RunTask
    response_time: float | None = None
    http_status: int | None = None  # None: no response (deadline, connection error)
    code: grpc.StatusCode | None = None  # the google.rpc code reported for the attempt
    error: str | None = None

    def to_pb(self, dispatch_only: bool = False) -> Any:
        """As an Attempt message (first_attempt carries only its dispatch_time)."""
        attempt = AttemptPb()
        set_time(attempt.dispatch_time, self.dispatch_time)
        if dispatch_only:
            return attempt
        set_time(attempt.schedule_time, self.schedule_time)
        if self.response_time is not None and self.code is not None:
            set_time(attempt.response_time, self.response_time)
            attempt.response_status.code = self.code.value[0]
            attempt.response_status.message = self.status_message()
        return attempt

    def status_message(self) -> str:
        """The message Cloud Tasks puts in response_status, e.g. "NOT_FOUND(5): HTTP ..."."""
        if self.code is None:
            return ""
        prefix = f"{self.code.name}({self.code.value[0]})"
        if self.http_status is not None:
            return f"{prefix}: HTTP status code {self.http_status}"
        return f"{prefix}: {self.error or 'no response'}"

    def to_json(self) -> dict[str, Any]:
        """For the admin API."""
        return {
            "number": self.number,
            "forced": self.forced,
            "schedule_time": _iso(self.schedule_time),
            "dispatch_time": _iso(self.dispatch_time),
            "response_time": _iso(self.response_time),
            "schedule_timestamp": self.schedule_time,
            "dispatch_timestamp": self.dispatch_time,
            "response_timestamp": self.response_time,
            "http_status": self.http_status,
            "code": self.code.name if self.code is not None else None,
            "error": self.error,
        }


@dataclass
class TaskRecord:
    """A live task in a queue."""

    name: TaskName
    http_request: Any  # HttpRequest message as stored (defaults filled)
    schedule_time: float
    create_time: float
    dispatch_deadline: float
    retry_config: Any | None  # the task's own RetryConfig, if it set one
    dispatch_count: int = 0
    response_count: int = 0
    # Responses other than 5xx, for X-CloudTasks-TaskExecutionCount.
    execution_count: int = 0
    # The previous attempt's HTTP status (None: no response) and response_status message,
    # for X-CloudTasks-TaskPreviousResponse and X-CloudTasks-TaskRetryReason.
    previous_response: int | None = None
    previous_reason: str | None = None
    first_attempt: AttemptRecord | None = None
    last_attempt: AttemptRecord | None = None
    in_flight: int = 0
    version: int = 0  # bumped when the schedule changes; stale heap entries are skipped

    def to_pb(self, view: int) -> Any:
        """As a Task message in `view` (BASIC leaves out the body, as the API does)."""
        task = TaskPb(name=str(self.name), view=view or _BASIC)
        task.http_request.CopyFrom(self.http_request)
        if (view or _BASIC) == _BASIC:
            task.http_request.ClearField("body")
        set_time(task.schedule_time, self.schedule_time)
        set_time(task.create_time, self.create_time)
        task.dispatch_deadline.FromMilliseconds(round(self.dispatch_deadline * 1000))
        task.dispatch_count = self.dispatch_count
        task.response_count = self.response_count
        if self.first_attempt is not None:
            task.first_attempt.CopyFrom(self.first_attempt.to_pb(dispatch_only=True))
        if self.last_attempt is not None:
            task.last_attempt.CopyFrom(self.last_attempt.to_pb())
        if self.retry_config is not None:
            task.retry_config.CopyFrom(self.retry_config)
        return task


@dataclass
class TaskHistory:
    """Every attempt of one task, kept after the task is gone (for tests)."""

    name: str
    queue: str
    create_time: float
    outcome: str = "pending"  # pending | succeeded | failed | deleted | purged | queue-deleted
    end_time: float | None = None
    attempts: list[AttemptRecord] = field(default_factory=list)
    dropped_attempts: int = 0  # attempts forgotten to bound memory (oldest first)

    def to_json(self) -> dict[str, Any]:
        """For the admin API."""
        return {
            "task": self.name,
            "queue": self.queue,
            "create_time": _iso(self.create_time),
            "outcome": self.outcome,
            "end_time": _iso(self.end_time),
            "dropped_attempts": self.dropped_attempts,
            "attempts": [attempt.to_json() for attempt in self.attempts],
        }


@dataclass
class QueueRecord:
    """A queue: its configuration (as the API shows it), its tasks and its dispatch state."""

    name: QueueName
    config: Any  # Queue message with defaults, state and purge_time
    tasks: dict[str, TaskRecord] = field(default_factory=dict)
    # (schedule_time, sequence, version, task name): the next task due is on top.
    due: list[tuple[float, int, int, str]] = field(default_factory=list)
    tokens: float = 0.0
    tokens_at: float = 0.0
    in_flight: int = 0

    def __post_init__(self) -> None:
        self.tokens = float(self.config.rate_limits.max_burst_size or 1)

    @property
    def paused(self) -> bool:
        return bool(self.config.state != QueuePb.State.RUNNING)

    def push(self, task: TaskRecord) -> None:
        """(Re)schedule `task` at its schedule_time, invalidating older entries."""
        task.version += 1
        heapq.heappush(
            self.due, (task.schedule_time, next(_sequence), task.version, str(task.name))
        )

    def take_token(self, now: float) -> float | None:
        """Take a dispatch token; None if there is one, else seconds until the next.

        A token bucket refilled at max_dispatches_per_second up to max_burst_size: rate
        limits honoured approximately, as the reference allows ("Cloud Tasks may ...").
        """
        rate = float(self.config.rate_limits.max_dispatches_per_second)
        capacity = float(self.config.rate_limits.max_burst_size or burst_size(rate))
        self.tokens = min(capacity, self.tokens + max(0.0, now - self.tokens_at) * rate)
        self.tokens_at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return None
        return (1.0 - self.tokens) / rate

    def rendered(self) -> Any:
        """A copy of the queue as the API returns it."""
        queue = QueuePb()
        queue.CopyFrom(self.config)
        return queue
