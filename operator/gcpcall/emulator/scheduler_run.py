"""One Cloud Scheduler execution: the HTTP attempts of a job run, with retries and deadline.

Why: an execution is where the emulator meets the outside world (the job's target, the
tokens it carries, the backoff between failed attempts). Separate from the RPC service
so that the request Cloud Scheduler sends is defined in one readable place.
"""

from __future__ import annotations

import datetime
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.rpc import status_pb2

from gcpcall.emulator.core import Clock, Dispatcher, HttpCall, HttpOutcome, TokenIssuer
from gcpcall.emulator.scheduler_jobs import http_method_name
from gcpcall.emulator.scheduler_rules import (
    DEFAULT_OAUTH_SCOPE,
    RetryPolicy,
    code_for_http_status,
)

__all__ = ["Attempt", "Execution", "build_call", "outcome_status", "schedule_time_header"]


@dataclass(frozen=True)
class Attempt:
    """One HTTP attempt of a job, as the admin API reports it."""

    job: str
    schedule_time: datetime.datetime
    attempt_time: datetime.datetime
    retry: int  # 0 for the first attempt of an execution
    forced: bool  # started by RunJob rather than the schedule
    code: grpc.StatusCode
    http_status: int | None
    error: str | None

    def as_json(self) -> dict[str, Any]:
        """The attempt as the admin API's JSON."""
        return {
            "job": self.job,
            "schedule_time": self.schedule_time.isoformat(),
            "attempt_time": self.attempt_time.isoformat(),
            "retry": self.retry,
            "forced": self.forced,
            "code": self.code.value[0],
            "code_name": self.code.name,
            "http_status": self.http_status,
            "error": self.error,
        }


def build_call(
    job: Any,
    schedule_time: datetime.datetime,
    zone: zoneinfo.ZoneInfo,
    tokens: TokenIssuer,
    deadline: float,
) -> HttpCall:
    """The HTTP request Cloud Scheduler sends for one attempt of an http_target job.

    HttpTarget.headers (google.cloud.scheduler.v1): the job's headers are sent, but "Host:
    This will be computed by Cloud Scheduler and derived from uri", "Content-Length: This
    will be computed", "User-Agent: This will be set to "Google-Cloud-Scheduler"",
    "X-CloudScheduler: This header will be set to true", "X-CloudScheduler-JobName: This
    header will contain the job name" (the short job id), "X-CloudScheduler-ScheduleTime:
    For Cloud Scheduler jobs specified in the unix-cron format, this header will contain
    the job schedule as an offset of UTC parsed according to RFC3339" (see
    `schedule_time_header`); with a body and no Content-Type, "Content-Type: This will be
    set to "application/octet-stream"". OAuth/OIDC tokens go into Authorization.
    """
    target = job.http_target
    headers = {key: value for key, value in target.headers.items()}
    lowered = {key.lower() for key in headers}
    if target.body and "content-type" not in lowered:
        headers["Content-Type"] = "application/octet-stream"
    headers["User-Agent"] = "Google-Cloud-Scheduler"
    headers["X-CloudScheduler"] = "true"
    headers["X-CloudScheduler-JobName"] = job.name.rsplit("/", 1)[-1]
    headers["X-CloudScheduler-ScheduleTime"] = schedule_time_header(schedule_time, zone)
    auth = target.WhichOneof("authorization_header")
    if auth == "oauth_token":
        scopes = (target.oauth_token.scope or DEFAULT_OAUTH_SCOPE).split()
        token = tokens.access_token(target.oauth_token.service_account_email, scopes)
        headers["Authorization"] = f"Bearer {token}"
    elif auth == "oidc_token":
        audience = target.oidc_token.audience or target.uri
        token = tokens.id_token(target.oidc_token.service_account_email, audience)
        headers["Authorization"] = f"Bearer {token}"
    return HttpCall(
        method=http_method_name(target.http_method),
        url=target.uri,
        headers=headers,
        body=bytes(target.body),
        deadline_seconds=deadline,
    )


def schedule_time_header(schedule_time: datetime.datetime, zone: zoneinfo.ZoneInfo) -> str:
    """X-CloudScheduler-ScheduleTime: the run's time in the job's time zone, RFC 3339.

    The current reference says "the job schedule as an offset of UTC parsed according to
    RFC3339" (older versions said "RFC3339 UTC "Zulu" format"); Firebase's scheduler
    tests feed "2023-04-13T12:00:00-07:00". So: whole seconds, the job's UTC offset, and
    "Z" when that offset is zero (which satisfies both wordings). A scheduled run carries
    its cron time; a RunJob (forced) run carries the time RunJob was called - the
    reference does not say, and that is the only schedule such a run has.
    """
    text = schedule_time.astimezone(zone).replace(microsecond=0).isoformat()
    return text.removesuffix("+00:00") + "Z" if text.endswith("+00:00") else text


def outcome_status(outcome: HttpOutcome) -> tuple[grpc.StatusCode, str]:
    """The code and message an attempt's outcome puts into the job's `status`."""
    if outcome.status is not None:
        code = code_for_http_status(outcome.status)
        return code, "" if code == grpc.StatusCode.OK else f"HTTP status {outcome.status}"
    if outcome.deadline_exceeded:
        return grpc.StatusCode.DEADLINE_EXCEEDED, "the target did not answer before the deadline"
    return grpc.StatusCode.UNAVAILABLE, f"the target could not be reached: {outcome.error}"


class Execution:
    """Runs the attempts of one execution of a job until success or retries run out."""

    def __init__(
        self,
        *,
        job: Any,
        zone: zoneinfo.ZoneInfo,
        policy: RetryPolicy,
        schedule_time: datetime.datetime,
        forced: bool,
        clock: Clock,
        dispatcher: Dispatcher,
        tokens: TokenIssuer,
        next_scheduled: Callable[[], datetime.datetime | None],
        on_attempt_start: Callable[[datetime.datetime], None],
        on_attempt_end: Callable[[Attempt, Any], None],
        on_retry_planned: Callable[[datetime.datetime], None],
    ) -> None:
        self.job = job
        self.zone = zone
        self.policy = policy
        self.schedule_time = schedule_time
        self.forced = forced
        self._clock = clock
        self._dispatcher = dispatcher
        self._tokens = tokens
        self._next_scheduled = next_scheduled
        self._on_attempt_start = on_attempt_start
        self._on_attempt_end = on_attempt_end
        self._on_retry_planned = on_retry_planned

    async def run(self) -> list[Attempt]:
        """Attempt, and retry per the policy; returns the attempts made."""
        attempts: list[Attempt] = []
        first_try: datetime.datetime | None = None
        retry = 0
        while True:
            started = self._clock.now()
            first_try = first_try or started
            self._on_attempt_start(started)
            call = build_call(
                self.job, self.schedule_time, self.zone, self._tokens, self.policy.attempt_deadline
            )
            outcome = await self._dispatcher.send(call)
            code, message = outcome_status(outcome)
            attempt = Attempt(
                job=self.job.name,
                schedule_time=self.schedule_time,
                attempt_time=started,
                retry=retry,
                forced=self.forced,
                code=code,
                http_status=outcome.status,
                error=outcome.error or (message or None),
            )
            attempts.append(attempt)
            self._on_attempt_end(attempt, status_pb2.Status(code=code.value[0], message=message))
            if code == grpc.StatusCode.OK:
                return attempts
            elapsed = (self._clock.now() - first_try).total_seconds()
            if not self.policy.may_retry(retry, elapsed):
                return attempts
            retry_at = self._clock.now() + datetime.timedelta(seconds=self.policy.backoff(retry))
            upcoming = self._next_scheduled()
            if upcoming is not None and retry_at >= upcoming:
                return attempts  # retries stop at the next scheduled execution
            self._on_retry_planned(retry_at)
            await self._clock.sleep_until(retry_at)
            retry += 1
