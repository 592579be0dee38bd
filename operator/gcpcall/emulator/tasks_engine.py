"""The Cloud Tasks emulator's queues, tombstones and dispatch loop.

Why: what makes Cloud Tasks Cloud Tasks happens between the RPCs - tasks are pushed to
their targets at schedule_time, within the queue's rate limits, retried with the queue's
backoff, and deleted after success or after the last allowed attempt, leaving their names
refused for a while. This module owns that behaviour; the RPC layer only validates requests
and calls it. Everything here runs on the emulator's event loop, and every state change is
synchronous, so an RPC never sees a half-made change.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

import grpc

from gcpcall.emulator.core import (
    CallLog,
    Clock,
    Dispatcher,
    FaultInjector,
    HttpCall,
    HttpOutcome,
    TokenIssuer,
)
from gcpcall.emulator.rpcauth import RpcAuth
from gcpcall.emulator.tasks_model import (
    TasksError,
    backoff_seconds,
    http_method_name,
    http_status_to_code,
    retry_policy,
)
from gcpcall.emulator.tasks_state import (
    AttemptRecord,
    QueueRecord,
    TaskHistory,
    TaskRecord,
    micros,
)

__all__ = ["TasksCore", "TasksEngine", "TasksSettings", "task_headers"]

log = logging.getLogger(__name__)

# HttpRequest.headers: headers Cloud Tasks computes or reserves, whatever the task says.
_RESERVED_PREFIXES = ("x-cloudtasks-", "x-google-", "x-appengine-")
_RESERVED_HEADERS = frozenset({"host", "content-length", "user-agent"})
USER_AGENT = "Google-Cloud-Tasks"
DEFAULT_OAUTH_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
_MAX_HISTORIES = 100_000
_MAX_ATTEMPTS_KEPT = 1_000


class TasksCore(Protocol):
    """The shared emulator machinery the Tasks half uses (see gcpcall.emulator.core)."""

    clock: Clock
    dispatcher: Dispatcher
    tokens: TokenIssuer
    faults: FaultInjector
    calls: CallLog
    auth: RpcAuth


@dataclass
class TasksSettings:
    """Knobs of the emulated service; tests and the admin API may change them."""

    # CreateTask: "another task with the same name can't be created for ~1 hour after the
    # original task was deleted or executed" (queues created through the API).
    task_tombstone_seconds: float = 3600.0
    # DeleteQueue: "If you delete a queue, a queue with the same name can't be created for
    # 7 days."
    queue_tombstone_seconds: float = 7 * 86400.0


class TasksEngine:
    """Queues, tasks, tombstones, attempt history, and the loop that dispatches tasks."""

    def __init__(self, core: TasksCore, settings: TasksSettings | None = None) -> None:
        self.core = core
        self.settings = settings or TasksSettings()
        self.queues: dict[str, QueueRecord] = {}
        # name -> when the queue or task went; the name is refused for the settings' window.
        self._queue_tombstones: dict[str, float] = {}
        self._task_tombstones: dict[str, float] = {}
        self._histories: OrderedDict[str, TaskHistory] = OrderedDict()
        self._wake: asyncio.Event | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._sends: set[asyncio.Task[None]] = set()
        self._last_prune = 0.0

    # -- time and lifecycle ---------------------------------------------------------------

    def now(self) -> float:
        """The emulator clock, as POSIX seconds."""
        return self.core.clock.timestamp()

    async def start(self) -> None:
        """Start the dispatch loop on the running event loop."""
        if self._loop_task is None:
            self._wake = asyncio.Event()
            self._loop_task = asyncio.create_task(self._run(), name="cloud-tasks-dispatch")

    async def stop(self) -> None:
        """Stop dispatching; attempts in flight are cancelled."""
        tasks = [t for t in (self._loop_task, *self._sends) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._loop_task = None
        self._sends.clear()

    def poke(self) -> None:
        """Make the loop look at the queues again (something became due or was freed)."""
        if self._wake is not None:
            self._wake.set()

    # -- queues ---------------------------------------------------------------------------

    def queue_tombstoned(self, name: str) -> bool:
        """True if a queue of this name was deleted too recently to be created again."""
        gone = self._queue_tombstones.get(name)
        return gone is not None and gone + self.settings.queue_tombstone_seconds > self.now()

    def require_queue(self, name: str) -> QueueRecord:
        """The queue, or NOT_FOUND."""
        queue = self.queues.get(name)
        if queue is None:
            raise TasksError(
                grpc.StatusCode.NOT_FOUND,
                "Queue does not exist. If you just created the queue, wait at least a minute "
                "for the queue to initialize.",
            )
        return queue

    def add_queue(self, queue: QueueRecord) -> None:
        """Store a new queue (the RPC layer has validated it)."""
        queue.tokens_at = self.now()
        self.queues[str(queue.name)] = queue
        self._queue_tombstones.pop(str(queue.name), None)
        self.poke()

    def delete_queue(self, name: str) -> None:
        """Delete a queue and its tasks; its name stays refused for a while."""
        queue = self.require_queue(name)
        now = self.now()
        for task in list(queue.tasks.values()):
            self._end_task(queue, task, "queue-deleted", now)
        del self.queues[name]
        self._queue_tombstones[name] = now

    def purge_queue(self, name: str) -> QueueRecord:
        """PurgeQueue: "All tasks created before this method is called are permanently
        deleted." Their names stay refused like those of any other deleted task."""
        queue = self.require_queue(name)
        now = self.now()
        for task in list(queue.tasks.values()):
            if task.create_time <= now:
                self._end_task(queue, task, "purged", now)
        queue.config.purge_time.FromMicroseconds(round(now * 1e6))
        return queue

    def set_paused(self, name: str, paused: bool) -> QueueRecord:
        """PauseQueue / ResumeQueue."""
        queue = self.require_queue(name)
        state = queue.config.State.PAUSED if paused else queue.config.State.RUNNING
        queue.config.state = state
        if not paused:
            queue.tokens_at = self.now()
            self.poke()
        return queue

    # -- tasks ----------------------------------------------------------------------------

    def task_tombstoned(self, name: str) -> bool:
        """True if a task of this name ran or was deleted within the tombstone window."""
        gone = self._task_tombstones.get(name)
        return gone is not None and gone + self.settings.task_tombstone_seconds > self.now()

    def find_task(self, name: str) -> tuple[QueueRecord, TaskRecord]:
        """The live task, or NOT_FOUND (with Cloud Tasks' message for a recent one)."""
        queue_name, _, _ = name.rpartition("/tasks/")
        queue = self.queues.get(queue_name)
        task = queue.tasks.get(name) if queue is not None else None
        if queue is None or task is None:
            if self.task_tombstoned(name):
                raise TasksError(
                    grpc.StatusCode.NOT_FOUND,
                    "The task no longer exists, though a task with this name existed "
                    "recently. The task either successfully completed or was deleted.",
                )
            raise TasksError(grpc.StatusCode.NOT_FOUND, "Requested entity was not found.")
        return queue, task

    def add_task(self, queue: QueueRecord, task: TaskRecord) -> None:
        """Store a new task (validated, name free) and schedule it."""
        name = str(task.name)
        queue.tasks[name] = task
        self._history_for(name, str(queue.name), task.create_time)
        queue.push(task)
        self.poke()

    def delete_task(self, name: str) -> None:
        """DeleteTask: the task goes, its name stays refused."""
        queue, task = self.find_task(name)
        self._end_task(queue, task, "deleted", self.now())

    def run_task(self, name: str) -> TaskRecord:
        """RunTask: dispatch now, whatever the queue's state, rate limits or running attempts.

        Returns the task "after the task is dispatched but before the task is received by
        its target".
        """
        queue, task = self.find_task(name)
        self._dispatch(queue, task, forced=True)
        return task

    def make_due(self, queue_name: str | None = None, task_name: str | None = None) -> int:
        """Admin: set the schedule_time of matching live tasks to now; returns how many."""
        now = self.now()
        count = 0
        for queue in self.queues.values():
            if queue_name is not None and str(queue.name) != queue_name:
                continue
            for task in queue.tasks.values():
                if task_name is not None and str(task.name) != task_name:
                    continue
                if task.in_flight == 0 and task.schedule_time > now:
                    task.schedule_time = micros(now)
                    queue.push(task)
                count += 1
        self.poke()
        return count

    def history(self, name: str) -> TaskHistory | None:
        """Every attempt of a task, also after it is gone (None if never seen)."""
        return self._histories.get(name)

    def histories(self, queue_name: str | None = None) -> list[TaskHistory]:
        """All remembered task histories, oldest first, optionally of one queue."""
        return [h for h in self._histories.values() if queue_name in (None, h.queue)]

    def _history_for(self, name: str, queue: str, create_time: float) -> TaskHistory:
        history = TaskHistory(name=name, queue=queue, create_time=create_time)
        self._histories[name] = history
        self._histories.move_to_end(name)
        while len(self._histories) > _MAX_HISTORIES:
            self._histories.popitem(last=False)
        return history

    def _end_task(self, queue: QueueRecord, task: TaskRecord, outcome: str, now: float) -> None:
        name = str(task.name)
        queue.tasks.pop(name, None)
        task.version += 1  # any entry left in the due heap is now stale
        self._task_tombstones[name] = now
        history = self._histories.get(name)
        if history is not None:
            history.outcome = outcome
            history.end_time = now

    # -- dispatch -------------------------------------------------------------------------

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            self._wake.clear()
            try:
                next_time = self._dispatch_due(self.now())
            except Exception:  # a bug must not stop every queue for good
                log.exception("Cloud Tasks dispatch loop failed; continuing")
                next_time = self.now() + 1.0
            waiters: list[asyncio.Task[object]] = [asyncio.create_task(self._wake.wait())]
            if next_time is not None:
                waiters.append(
                    asyncio.create_task(self.core.clock.sleep_until_timestamp(next_time))
                )
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()

    def _dispatch_due(self, now: float) -> float | None:
        """Start every attempt that is due and allowed; the next time to look again."""
        self._prune(now)
        next_time: float | None = None
        for queue in list(self.queues.values()):
            if queue.paused:
                continue
            limits = queue.config.rate_limits
            while queue.due and queue.due[0][0] <= now:
                if queue.in_flight >= limits.max_concurrent_dispatches:
                    break  # a finishing attempt pokes the loop
                _, _, version, name = queue.due[0]
                task = queue.tasks.get(name)
                if task is None or task.version != version or task.in_flight:
                    heapq.heappop(queue.due)
                    continue
                wait = queue.take_token(now)
                if wait is not None:
                    next_time = _earliest(next_time, now + wait)
                    break
                heapq.heappop(queue.due)
                self._dispatch(queue, task, forced=False)
            if queue.due and queue.due[0][0] > now:
                next_time = _earliest(next_time, queue.due[0][0])
        return next_time

    def _dispatch(self, queue: QueueRecord, task: TaskRecord, forced: bool) -> None:
        """Record the attempt as dispatched and send it in the background."""
        now = self.now()
        call = self._http_call(queue, task)
        task.dispatch_count += 1
        task.version += 1  # the attempt supersedes any pending schedule entry
        attempt = AttemptRecord(
            number=task.dispatch_count,
            schedule_time=task.schedule_time,
            dispatch_time=now,
            forced=forced,
        )
        if task.first_attempt is None:
            task.first_attempt = attempt
        task.last_attempt = attempt
        task.in_flight += 1
        queue.in_flight += 1
        history = self._histories.get(str(task.name))
        if history is not None:
            history.attempts.append(attempt)
            if len(history.attempts) > _MAX_ATTEMPTS_KEPT:
                del history.attempts[0]
                history.dropped_attempts += 1
        send = asyncio.create_task(self._send(queue, task, attempt, call))
        self._sends.add(send)
        send.add_done_callback(self._sends.discard)

    async def _send(
        self, queue: QueueRecord, task: TaskRecord, attempt: AttemptRecord, call: HttpCall
    ) -> None:
        try:
            outcome = await self.core.dispatcher.send(call)
        except Exception as error:  # the dispatcher reports trouble; this is a bug guard
            log.exception("dispatch of %s failed", task.name)
            outcome = HttpOutcome(status=None, body=b"", error=f"{type(error).__name__}")
        self._finish(queue, task, attempt, outcome)

    def _finish(
        self, queue: QueueRecord, task: TaskRecord, attempt: AttemptRecord, outcome: HttpOutcome
    ) -> None:
        now = self.now()
        attempt.response_time = now
        if outcome.status is None:
            attempt.error = outcome.error
            attempt.code = (
                grpc.StatusCode.DEADLINE_EXCEEDED
                if outcome.deadline_exceeded
                else grpc.StatusCode.UNAVAILABLE
            )
        else:
            attempt.http_status = outcome.status
            attempt.code = http_status_to_code(outcome.status)
        queue.in_flight -= 1
        task.in_flight -= 1
        self.poke()
        if queue.tasks.get(str(task.name)) is not task:
            return  # deleted, purged or finished meanwhile: only the history keeps this
        # X-CloudTasks-TaskPreviousResponse: "The HTTP response code from the previous
        # retry" - none when the previous attempt got no response (deadline, connection).
        task.previous_response = outcome.status
        task.previous_reason = attempt.status_message()
        if outcome.status is not None:
            task.response_count += 1
            if outcome.status < 500:
                task.execution_count += 1
        if attempt.code == grpc.StatusCode.OK:
            self._end_task(queue, task, "succeeded", now)
            return
        policy = retry_policy(queue.config.retry_config, task.retry_config)
        first = task.first_attempt.dispatch_time if task.first_attempt else now
        if policy.exhausted(task.dispatch_count, now - first):
            self._end_task(queue, task, "failed", now)
            return
        if task.in_flight:
            return  # another attempt (RunTask) is still out; its result decides
        task.schedule_time = micros(now + backoff_seconds(policy, task.dispatch_count))
        queue.push(task)

    def _http_call(self, queue: QueueRecord, task: TaskRecord) -> HttpCall:
        """The request Cloud Tasks sends for this attempt, with its own headers and token."""
        request = task.http_request
        auth = request.WhichOneof("authorization_header")
        headers: dict[str, str] = {}
        for key, value in request.headers.items():
            lower = key.lower()
            if lower in _RESERVED_HEADERS or lower.startswith(_RESERVED_PREFIXES):
                continue
            if auth is not None and lower == "authorization":
                continue
            headers[key] = value
        headers.update(task_headers(queue, task))
        if auth == "oidc_token":
            token = request.oidc_token
            audience = token.audience or request.url
            bearer = self.core.tokens.id_token(token.service_account_email, audience)
            headers["Authorization"] = f"Bearer {bearer}"
        elif auth == "oauth_token":
            token = request.oauth_token
            scopes = [token.scope or DEFAULT_OAUTH_SCOPE]
            bearer = self.core.tokens.access_token(token.service_account_email, scopes)
            headers["Authorization"] = f"Bearer {bearer}"
        return HttpCall(
            method=http_method_name(request.http_method),
            url=request.url,
            headers=headers,
            body=bytes(request.body),
            deadline_seconds=task.dispatch_deadline,
        )

    def _prune(self, now: float) -> None:
        """Forget tombstones whose window has passed (at most once a clock minute)."""
        if now - self._last_prune < 60.0:
            return
        self._last_prune = now
        windows = (
            (self._task_tombstones, self.settings.task_tombstone_seconds),
            (self._queue_tombstones, self.settings.queue_tombstone_seconds),
        )
        for tombstones, window in windows:
            for name in [n for n, gone in tombstones.items() if gone + window <= now]:
                del tombstones[name]


def task_headers(queue: QueueRecord, task: TaskRecord) -> dict[str, str]:
    """The headers Cloud Tasks adds to a dispatch, as "Creating HTTP Target tasks" and the
    HttpRequest reference describe them (values for the attempt about to be sent):

    - User-Agent: "This will be set to "Google-Cloud-Tasks"" (Content-Type: "won't be set
      by Cloud Tasks"; the task's own is sent, else none);
    - X-CloudTasks-QueueName: "The name of the queue" (the short queue id);
    - X-CloudTasks-TaskName: "The "short" name of the task, or, if no name was specified
      at creation, a unique system-generated id";
    - X-CloudTasks-TaskRetryCount: "The number of times this task has been retried. For
      the first attempt, this value is 0. This number includes attempts where the task
      failed due to 5XX error codes and never reached the execution phase" (= the
      attempts made before this one);
    - X-CloudTasks-TaskExecutionCount: "The total number of times that the task has
      received a response from the handler ... does not include failures due to 5XX
      error codes" (responses other than 5xx; no response counts nothing);
    - X-CloudTasks-TaskETA: "The schedule time of the task, specified in seconds since
      January 1st 1970" (microseconds after the point, as schedule_time has them);
    - X-CloudTasks-TaskPreviousResponse: "The HTTP response code from the previous
      retry" (only on a retry whose previous attempt got a response);
    - X-CloudTasks-TaskRetryReason: "The reason for retrying the task" (only on retries).
      Its values are not documented; the emulator sends the previous attempt's
      response_status message, e.g. "UNAVAILABLE(14): HTTP status code 503".
    """
    headers = {
        "User-Agent": USER_AGENT,
        "X-CloudTasks-QueueName": queue.name.queue_id,
        "X-CloudTasks-TaskName": task.name.task_id,
        "X-CloudTasks-TaskRetryCount": str(task.dispatch_count),
        "X-CloudTasks-TaskExecutionCount": str(task.execution_count),
        "X-CloudTasks-TaskETA": f"{task.schedule_time:.6f}",
    }
    if task.dispatch_count:
        if task.previous_response is not None:
            headers["X-CloudTasks-TaskPreviousResponse"] = str(task.previous_response)
        if task.previous_reason:
            headers["X-CloudTasks-TaskRetryReason"] = task.previous_reason
    return headers


def _earliest(current: float | None, candidate: float) -> float:
    return candidate if current is None else min(current, candidate)
