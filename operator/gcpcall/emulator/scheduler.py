"""Cloud Scheduler v1 over gRPC: every CloudScheduler RPC, cron ticking, job executions.

Why: the operator's ScheduledGcpCall controller and its tests need a Cloud Scheduler that
answers as the real one does (codes, field semantics, state transitions) and really runs
jobs against HTTP targets, without a Google project. This module holds the jobs, serves
the RPCs, and runs a loop that fires each enabled job at its next cron time on the
emulator's clock. Rules and messages live in `scheduler_rules` and `scheduler_jobs`, the
HTTP attempts in `scheduler_run`; the admin routes (`scheduler_admin`) see this service
through a protocol and are wired by `server`, so this module never imports them.

With authentication on (`rpcauth`), CreateJob, and UpdateJob when it writes the HTTP
target or changes its token service account, need `iam.serviceAccounts.actAs` on the
job's OAuth/OIDC token service account.

Behaviour where the reference is silent: a paused job has no `schedule_time` (it gets one
again on resume); RunJob works in any state; when the clock jumps over several cron
times the job runs once, for the latest of them (no catch-up burst).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime
import logging
import secrets
import zoneinfo
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.cloud import scheduler_v1
from google.protobuf import empty_pb2

from gcpcall.emulator.grpcutil import ApiError, EmulatorCore, generic_handler
from gcpcall.emulator.scheduler_jobs import (
    Unimplemented,
    apply_update,
    clone,
    fill_defaults,
    validate_job,
)
from gcpcall.emulator.scheduler_rules import (
    InvalidArgument,
    RetryPolicy,
    cron_next,
    cron_previous,
    parse_job_name,
    parse_location,
)
from gcpcall.emulator.scheduler_run import Attempt, Execution

__all__ = ["SERVICE_NAME", "SchedulerService"]

SERVICE_NAME = "google.cloud.scheduler.v1.CloudScheduler"
MAX_PAGE_SIZE = 500

log = logging.getLogger(__name__)

_ENABLED = int(scheduler_v1.Job.State.ENABLED)
_PAUSED = int(scheduler_v1.Job.State.PAUSED)


@dataclass
class _Entry:
    """A stored job and what the emulator tracks about it."""

    job: Any  # the raw Job message, output-only fields included
    zone: zoneinfo.ZoneInfo
    policy: RetryPolicy
    next_run: datetime.datetime | None  # next cron time while enabled
    scheduled: asyncio.Task[list[Attempt]] | None = None  # the schedule's running execution
    forced: set[asyncio.Task[list[Attempt]]] = field(default_factory=set)

    def tasks(self) -> list[asyncio.Task[list[Attempt]]]:
        running = list(self.forced)
        if self.scheduled is not None:
            running.append(self.scheduled)
        return running


class SchedulerService:
    """The CloudScheduler service: job store, RPC handlers and the cron loop."""

    def __init__(self, core: EmulatorCore) -> None:
        self.core = core
        self._jobs: dict[str, _Entry] = {}
        self._attempts: dict[str, list[Attempt]] = {}
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------

    def generic_handler(self) -> Any:
        """The grpc.GenericRpcHandler serving google.cloud.scheduler.v1.CloudScheduler."""
        t = scheduler_v1
        job, empty = t.Job.pb(), empty_pb2.Empty
        return generic_handler(
            self.core,
            SERVICE_NAME,
            {
                "ListJobs": (self.list_jobs, t.ListJobsRequest.pb(), t.ListJobsResponse.pb()),
                "GetJob": (self.get_job, t.GetJobRequest.pb(), job),
                "CreateJob": (self.create_job, t.CreateJobRequest.pb(), job),
                "UpdateJob": (self.update_job, t.UpdateJobRequest.pb(), job),
                "DeleteJob": (self.delete_job, t.DeleteJobRequest.pb(), empty),
                "PauseJob": (self.pause_job, t.PauseJobRequest.pb(), job),
                "ResumeJob": (self.resume_job, t.ResumeJobRequest.pb(), job),
                "RunJob": (self.run_job, t.RunJobRequest.pb(), job),
            },
        )

    async def start(self) -> None:
        """Start the cron loop."""
        self._loop_task = asyncio.create_task(self._cron_loop(), name="scheduler-cron")

    async def stop(self) -> None:
        """Stop the cron loop and every running execution."""
        running: list[asyncio.Task[Any]] = [
            task for entry in self._jobs.values() for task in entry.tasks()
        ]
        if self._loop_task is not None:
            running.append(self._loop_task)
            self._loop_task = None
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    # -- the RPCs (raw protobuf requests in, raw protobuf responses out) ---------------

    async def create_job(self, request: Any) -> Any:
        parent = request.parent
        _checked(parse_location, parent)
        job = clone(request.job)
        if not job.name:
            job.name = f"{parent}/jobs/emulated-{secrets.token_hex(8)}"
        name = _checked(parse_job_name, job.name)
        if name.parent != parent:
            raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, "job name is not under parent")
        if job.name in self._jobs:
            raise ApiError(grpc.StatusCode.ALREADY_EXISTS, f"job {job.name} already exists")
        for output_only in ("user_update_time", "status", "schedule_time", "last_attempt_time"):
            job.ClearField(output_only)
        zone, policy = _checked(validate_job, job)
        self.core.auth.require_act_as(_token_account(job))
        fill_defaults(job)
        now = self.core.clock.now()
        job.user_update_time.FromDatetime(now)
        job.state = _ENABLED
        entry = _Entry(job=job, zone=zone, policy=policy, next_run=None)
        self._reschedule(entry, now)
        self._jobs[job.name] = entry
        self._wake.set()
        return clone(job)

    async def get_job(self, request: Any) -> Any:
        return clone(self._entry(request.name).job)

    async def list_jobs(self, request: Any) -> Any:
        _checked(parse_location, request.parent)
        if request.page_size < 0:
            raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, "page_size must not be negative")
        size = min(request.page_size or MAX_PAGE_SIZE, MAX_PAGE_SIZE)
        after = _decode_page_token(request.page_token, request.parent)
        prefix = request.parent + "/jobs/"
        names = sorted(n for n in self._jobs if n.startswith(prefix) and n > after)
        response = scheduler_v1.ListJobsResponse.pb()()
        for name in names[:size]:
            response.jobs.append(self._jobs[name].job)
        if len(names) > size:
            response.next_page_token = _encode_page_token(names[size - 1], request.parent)
        return response

    async def update_job(self, request: Any) -> Any:
        update = request.job
        entry = self._entry(update.name)
        paths = list(request.update_mask.paths)
        job = _checked(apply_update, entry.job, update, paths)
        zone, policy = _checked(validate_job, job)
        account = _token_account(job)
        if account != _token_account(entry.job) or _touches_target(paths, update):
            self.core.auth.require_act_as(account)
        fill_defaults(job)
        now = self.core.clock.now()
        job.user_update_time.FromDatetime(now)
        entry.job, entry.zone, entry.policy = job, zone, policy
        self._reschedule(entry, now)
        self._wake.set()
        return clone(job)

    async def delete_job(self, request: Any) -> Any:
        entry = self._entry(request.name)
        del self._jobs[request.name]
        for task in entry.tasks():
            task.cancel()
        self._wake.set()
        return empty_pb2.Empty()

    async def pause_job(self, request: Any) -> Any:
        entry = self._entry(request.name)
        if entry.job.state != _ENABLED:
            raise ApiError(grpc.StatusCode.FAILED_PRECONDITION, "only an ENABLED job can pause")
        entry.job.state = _PAUSED
        self._reschedule(entry, self.core.clock.now())
        self._wake.set()
        return clone(entry.job)

    async def resume_job(self, request: Any) -> Any:
        entry = self._entry(request.name)
        if entry.job.state != _PAUSED:
            raise ApiError(grpc.StatusCode.FAILED_PRECONDITION, "only a PAUSED job can resume")
        entry.job.state = _ENABLED
        self._reschedule(entry, self.core.clock.now())
        self._wake.set()
        return clone(entry.job)

    async def run_job(self, request: Any) -> Any:
        entry = self._entry(request.name)
        task = self._start_execution(entry, self.core.clock.now(), forced=True)
        entry.forced.add(task)
        task.add_done_callback(entry.forced.discard)
        return clone(entry.job)

    # -- what tests see through the admin API ------------------------------------------

    def attempts(self, job: str | None = None) -> list[Attempt]:
        """The attempts made, oldest first, for one job name or all."""
        if job is not None:
            return list(self._attempts.get(job, []))
        every = [attempt for attempts in self._attempts.values() for attempt in attempts]
        return sorted(every, key=lambda attempt: attempt.attempt_time)

    def clear_attempts(self) -> None:
        """Forget the attempt history."""
        self._attempts.clear()

    async def fire(self, name: str, wait: bool = False) -> tuple[datetime.datetime, list[Attempt]]:
        """Run a job's next scheduled execution now, as if its time had come.

        The run carries the scheduled time, and the job's next run moves past it. With
        `wait`, returns after the execution (retries included) has ended.
        """
        entry = self._jobs.get(name)
        if entry is None:
            raise KeyError(name)
        if entry.job.state != _ENABLED or entry.next_run is None:
            raise ValueError(f"job {name} is not ENABLED")
        schedule_time = entry.next_run
        entry.next_run = cron_next(entry.job.schedule, entry.zone, schedule_time)
        task = self._start_execution(entry, schedule_time, forced=False)
        entry.forced.add(task)  # tracked (and cancelled on delete) like a RunJob run
        task.add_done_callback(entry.forced.discard)
        self._wake.set()
        if not wait:
            return schedule_time, []
        return schedule_time, await asyncio.shield(task)

    # -- internals ---------------------------------------------------------------------

    def _entry(self, name: str) -> _Entry:
        _checked(parse_job_name, name)
        entry = self._jobs.get(name)
        if entry is None:
            raise ApiError(grpc.StatusCode.NOT_FOUND, f"job {name} not found")
        return entry

    def _reschedule(self, entry: _Entry, now: datetime.datetime) -> None:
        """Recompute the next cron time (none while paused) and the job's schedule_time."""
        if entry.job.state == _ENABLED:
            entry.next_run = cron_next(entry.job.schedule, entry.zone, now)
            entry.job.schedule_time.FromDatetime(entry.next_run)
        else:
            entry.next_run = None
            entry.job.ClearField("schedule_time")

    def _start_execution(
        self, entry: _Entry, schedule_time: datetime.datetime, *, forced: bool
    ) -> asyncio.Task[list[Attempt]]:
        name = entry.job.name

        def still_stored() -> _Entry | None:
            current = self._jobs.get(name)
            return current if current is entry else None

        def on_attempt_start(when: datetime.datetime) -> None:
            if still_stored():
                entry.job.last_attempt_time.FromDatetime(when)

        def on_attempt_end(attempt: Attempt, status: Any) -> None:
            self._attempts.setdefault(name, []).append(attempt)
            if still_stored():
                entry.job.status.CopyFrom(status)
                if entry.next_run is not None:
                    entry.job.schedule_time.FromDatetime(entry.next_run)

        def on_retry_planned(when: datetime.datetime) -> None:
            if still_stored() and entry.next_run is not None:
                entry.job.schedule_time.FromDatetime(min(when, entry.next_run))

        execution = Execution(
            job=clone(entry.job),
            zone=entry.zone,
            policy=entry.policy,
            schedule_time=schedule_time,
            forced=forced,
            clock=self.core.clock,
            dispatcher=self.core.dispatcher,
            tokens=self.core.tokens,
            next_scheduled=lambda: entry.next_run,
            on_attempt_start=on_attempt_start,
            on_attempt_end=on_attempt_end,
            on_retry_planned=on_retry_planned,
        )
        return asyncio.create_task(execution.run(), name=f"scheduler-run {name}")

    async def _cron_loop(self) -> None:
        """Fire each enabled job at its next cron time; one scheduled execution at a time."""
        while True:
            self._wake.clear()
            now = self.core.clock.now()
            earliest: datetime.datetime | None = None
            for entry in list(self._jobs.values()):
                if entry.job.state != _ENABLED or entry.next_run is None:
                    continue
                if entry.scheduled is not None and not entry.scheduled.done():
                    continue  # the next run waits for the current one to end
                if entry.next_run <= now:
                    self._fire_due(entry, now)
                if earliest is None or entry.next_run < earliest:
                    earliest = entry.next_run
            await self._sleep(earliest)

    def _fire_due(self, entry: _Entry, now: datetime.datetime) -> None:
        schedule_time = cron_previous(entry.job.schedule, entry.zone, now)
        entry.next_run = cron_next(entry.job.schedule, entry.zone, now)
        entry.job.schedule_time.FromDatetime(entry.next_run)
        task = self._start_execution(entry, schedule_time, forced=False)
        entry.scheduled = task
        task.add_done_callback(lambda _: self._wake.set())

    async def _sleep(self, until: datetime.datetime | None) -> None:
        waiters: list[asyncio.Task[Any]] = [asyncio.create_task(self._wake.wait())]
        if until is not None:
            waiters.append(asyncio.create_task(self.core.clock.sleep_until(until)))
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Cancel without awaiting: awaiting here could swallow our own cancellation.
            for waiter in waiters:
                waiter.cancel()


def _token_account(job: Any) -> str:
    """The service account whose token the job's HTTP calls carry ("" for none)."""
    if not job.HasField("http_target"):
        return ""
    target = job.http_target
    return str(target.oauth_token.service_account_email or target.oidc_token.service_account_email)


def _touches_target(paths: list[str], update: Any) -> bool:
    """Does an UpdateJob write the HTTP target (an empty mask writes the fields given)?"""
    if not paths:
        return bool(update.HasField("http_target"))
    return any(p.split(".", 1)[0] == "http_target" for p in paths)


def _checked(function: Any, *args: Any) -> Any:
    """Call a rule function, turning its refusals into the RPC's status codes."""
    try:
        return function(*args)
    except InvalidArgument as error:
        raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, str(error)) from error
    except Unimplemented as error:
        raise ApiError(grpc.StatusCode.UNIMPLEMENTED, str(error)) from error


def _encode_page_token(last_name: str, parent: str) -> str:
    raw = f"{parent}\n{last_name}".encode()
    return base64.urlsafe_b64encode(raw).decode("ascii")


def _decode_page_token(token: str, parent: str) -> str:
    """The last job name of the previous page ("" for the first page)."""
    if not token:
        return ""
    try:
        token_parent, last_name = base64.urlsafe_b64decode(token).decode().split("\n", 1)
    except (ValueError, binascii.Error, UnicodeDecodeError) as error:
        raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, "invalid page_token") from error
    if token_parent != parent:
        raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, "page_token is for another parent")
    return last_name
