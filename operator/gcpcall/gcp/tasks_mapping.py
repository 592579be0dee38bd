"""Pure mapping from a GcpTaskSpec to a Cloud Tasks `Task`, and readers of what Google has.

Why pure: a task is created once and never updated, so the one CreateTask request must be
right; building it as a function of plain values makes every field testable without a
server. The readers turn fetched protos into api/observed.py values, so status building
(api/task_status.py) never handles a proto.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from google.cloud import tasks_v2

from gcpcall.api.common import RelayTarget
from gcpcall.api.gcp_task import GcpTaskSpec
from gcpcall.api.observed import ObservedAttempt, ObservedQueue, ObservedTask
from gcpcall.api.request import resolve_request
from gcpcall.gcp.scheduler_mapping import http_fields, plain_time

__all__ = ["desired_task", "observed_attempt", "observed_queue", "observed_task"]


def desired_task(
    spec: GcpTaskSpec,
    task_name: str,
    identity_email: str | None,
    now: datetime,
    *,
    body: bytes | None = None,
    relay: RelayTarget | None = None,
) -> tasks_v2.Task:
    """The CreateTask request's task. `now` anchors delaySeconds: pass the object's
    creationTimestamp, so a retried create after a crash asks for the same time."""
    req = resolve_request(spec.target, identity_email, body=body, relay=relay)
    http = tasks_v2.HttpRequest(url=req.uri, **http_fields(req, tasks_v2))
    task = tasks_v2.Task(
        name=task_name,
        http_request=http,
        dispatch_deadline=timedelta(seconds=spec.dispatch_deadline_seconds),
    )
    schedule_at = spec.schedule_at(now)
    if schedule_at is not None:
        task.schedule_time = schedule_at
    return task


def observed_attempt(attempt: tasks_v2.Attempt | None) -> ObservedAttempt | None:
    """None for an attempt never dispatched; `code` only once a response was seen
    (Cloud Tasks: response_status is meaningless while dispatch/response time is unset)."""
    if attempt is None:
        return None
    dispatched = plain_time(attempt.dispatch_time)
    if dispatched is None:
        return None
    responded = plain_time(attempt.response_time)
    answered = responded is not None and "response_status" in attempt
    return ObservedAttempt(
        dispatch_time=dispatched,
        schedule_time=plain_time(attempt.schedule_time),
        response_time=responded,
        code=int(attempt.response_status.code) if answered else None,
        message=str(attempt.response_status.message) if answered else "",
    )


def observed_task(task: tasks_v2.Task) -> ObservedTask:
    first = observed_attempt(task.first_attempt) if "first_attempt" in task else None
    last = observed_attempt(task.last_attempt) if "last_attempt" in task else None
    return ObservedTask(
        name=task.name,
        schedule_time=plain_time(task.schedule_time),
        create_time=plain_time(task.create_time),
        dispatch_count=int(task.dispatch_count),
        response_count=int(task.response_count),
        first_attempt_time=first.dispatch_time if first else None,
        last_attempt=last,
    )


def observed_queue(queue: tasks_v2.Queue) -> ObservedQueue:
    return ObservedQueue(
        name=queue.name,
        paused=queue.state in (tasks_v2.Queue.State.PAUSED, tasks_v2.Queue.State.DISABLED),
    )
