"""Following the long-running operations relayed calls start, to their end, restart-safe.

Why a loop of the operator's (not of each relay replica): an operation must have exactly one
follower. The relay records a started operation in the run (`operation.pollUrl`,
`deadline`), and the operator, the one active replica, follows every pending operation it
sees in its objects' status: offered at once by the in-process relay, and by the watch
otherwise (a relay Deployment, or a restart, whose initial listing brings them all back).
Polls use the object's own credentials, back off as google-api-core's operation polling
does (1 s, growing by half, at most 22 s: under 180 polls an hour), stay inside a
per-project rate, and stop at `operation.timeoutSeconds` (DeadlineExceeded).
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from gcpcall.api.errors import InvalidSpec
from gcpcall.api.gcp_task import GcpTaskSpec, parse_gcp_task
from gcpcall.api.observed import parse_time
from gcpcall.api.operations import OperationState, read_state
from gcpcall.api.ownership import Owner, Part
from gcpcall.api.relay_runs import finished, schedule_time_header
from gcpcall.api.scheduled_call import ScheduledCallSpec, parse_scheduled_call
from gcpcall.api.status import recorded_runs, runs_part
from gcpcall.api.target import OAuthToken
from gcpcall.api.task_status import TERMINAL_PHASES, outcome_part
from gcpcall.gcp.calls import project_of
from gcpcall.gcp.errors import classify
from gcpcall.gcp.target_calls import TargetCaller
from gcpcall.kube import ObjectRef
from gcpcall.observe.metrics import (
    OPERATION_POLLS,
    OPERATION_SECONDS,
    OPERATIONS,
    OPERATIONS_IN_FLIGHT,
)
from gcpcall.ratelimit import QuotaLimiter
from gcpcall.reconcile.deps import Deps
from gcpcall.reconcile.loop import BackgroundLoop, bounded
from gcpcall.reconcile.objects import ObjectView, defaults_for

__all__ = ["OperationFollower", "Pending", "poll_auth"]

log = logging.getLogger(__name__)

FIRST_DELAY = 1.0
GROWTH = 1.5
MAX_DELAY = 22.0  # "about 20 s", and under 180 polls an hour after the first minute
_POLL_WITHIN = 30.0
_POLLS_PER_MINUTE = 600.0  # per project: far below any Google API's read quota


@dataclass
class Pending:
    """One operation being followed, and what its polls need."""

    ref: ObjectRef
    run_key: str  # the run's scheduleTime (ScheduledGcpCall); "" for a GcpTask
    style: str
    name: str
    poll_url: str
    deadline: datetime.datetime
    started: datetime.datetime
    service_account: str | None
    auth_kind: str | None
    auth_email: str | None
    scope_or_audience: str
    history_limit: int = 10
    ttl_seconds: int | None = None
    timeout_seconds: int = 3600
    polls: int = 0
    delay: float = FIRST_DELAY
    due: float = 0.0

    @property
    def key(self) -> tuple[str, str]:
        return self.ref.uid, self.run_key


def _style(operation: Mapping[str, Any]) -> str:
    """How to read a poll's answer, from where it is polled (status keeps only the URL)."""
    host = urlsplit(str(operation.get("pollUrl") or "")).hostname or ""
    if host == "compute.googleapis.com":
        return "compute"
    if host == "sqladmin.googleapis.com":
        return "sql"
    return "longrunning"


class OperationFollower(BackgroundLoop):
    name = "operations"

    def __init__(self, deps: Deps, caller: TargetCaller) -> None:
        super().__init__(deps.clock)
        self.deps = deps
        self.caller = caller
        self.limiter = QuotaLimiter({"poll": _POLLS_PER_MINUTE})
        self._pending: dict[tuple[str, str], Pending] = {}

    def tracked(self) -> int:
        return len(self._pending)

    def _set(self) -> None:
        OPERATIONS_IN_FLIGHT.set(len(self._pending))

    def follow(self, pending: Pending) -> None:
        if pending.key in self._pending:
            return
        pending.due = self.clock.monotonic() + FIRST_DELAY
        self._pending[pending.key] = pending
        self._set()
        self.wake()

    def forget(self, uid: str) -> None:
        for key in [k for k in self._pending if k[0] == uid]:
            del self._pending[key]
        self._set()

    async def offer(self, body: Mapping[str, Any]) -> None:
        """Follow the pending operations an object's status shows (after a restart, or
        recorded by a relay in another process). Objects with none cost nothing."""
        obj = ObjectView.from_body(body, str(body.get("kind") or ""),
                                   "scheduledgcpcalls" if body.get("kind") == "ScheduledGcpCall"
                                   else "gcptasks")
        status = obj.status
        if obj.ref.kind == "ScheduledGcpCall":
            pending = [(str(r.get("scheduleTime") or ""), r.get("operation") or {})
                       for r in recorded_runs(status)
                       if r.get("result") == "Running" and (r.get("operation") or {})
                       .get("pollUrl")]
        elif status.get("phase") not in TERMINAL_PHASES and (status.get("operation") or {}).get(
                "pollUrl") and not (status.get("operation") or {}).get("done"):
            pending = [("", status.get("operation") or {})]
        else:
            return
        pending = [(k, op) for k, op in pending if (obj.ref.uid, k) not in self._pending]
        if not pending or not obj.relay:
            return
        try:
            defaults = await defaults_for(obj, self.deps.settings, self.deps.namespaces)
            spec = (parse_scheduled_call(obj.spec, defaults) if obj.ref.kind == "ScheduledGcpCall"
                    else parse_gcp_task(obj.spec, defaults))
        except InvalidSpec as e:
            log.warning("its operations are not followed: %s", e, extra={"object": obj.ref})
            return
        history = getattr(spec, "history_limit", 10)
        ttl = getattr(spec, "ttl_seconds_after_finished", None)
        timeout = spec.operation.timeout_seconds if spec.operation else 3600
        for run_key, op in pending:
            deadline = op.get("deadline")
            self.follow(Pending(
                ref=obj.ref, run_key=run_key, style=_style(op), name=str(op.get("name") or ""),
                poll_url=str(op["pollUrl"]),
                deadline=parse_time(str(deadline)) if deadline else self.clock.now(),
                started=schedule_time_header(run_key) or self.clock.now(),
                service_account=spec.service_account_name, **poll_auth(spec),
                history_limit=history, ttl_seconds=ttl, timeout_seconds=timeout,
            ))

    async def step(self) -> float:
        now = self.clock.monotonic()
        due = [p for p in self._pending.values() if p.due <= now]
        for p in due:
            p.due = float("inf")  # taken by this round
        await bounded([self._poll(p) for p in due])
        return min((p.due for p in self._pending.values()), default=float("inf"))

    async def _poll(self, p: Pending) -> None:
        if self.clock.now() >= p.deadline:
            await self._end(p, None)
            return
        await self.limiter.acquire(project_of(_resource(p.poll_url)), "poll")
        headers: dict[str, str] = {}
        try:
            if p.auth_kind is not None:
                token = await self.deps.identities.call_token(
                    p.ref.namespace, p.service_account, kind=p.auth_kind, email=p.auth_email,
                    scope_or_audience=p.scope_or_audience)
                if token:
                    headers["Authorization"] = f"Bearer {token}"
        except Exception as exc:
            log.warning("polling the operation waits for a token: %s", classify(exc).message,
                        extra={"object": p.ref, "google": p.name})
            self._again(p)
            return
        outcome = await self.caller.call("GET", p.poll_url, headers, None, _POLL_WITHIN)
        p.polls += 1
        state = read_state(p.style, outcome.body) if outcome.succeeded else None
        if state is None:
            OPERATION_POLLS.labels("error").inc()
            if outcome.http_status in (404, 410):
                state = OperationState(True, 5, f"the operation is gone (HTTP "
                                                f"{outcome.http_status} from its poll URL)")
            else:
                self._again(p)
                return
        OPERATION_POLLS.labels("done" if state.done else "running").inc()
        if state.done:
            await self._end(p, state)
        else:
            self._again(p)

    def _again(self, p: Pending) -> None:
        if p.key not in self._pending:
            return
        p.due = self.clock.monotonic() + p.delay
        p.delay = min(MAX_DELAY, p.delay * GROWTH)
        self.wake()

    async def _end(self, p: Pending, state: OperationState | None) -> None:
        """Write the outcome (DeadlineExceeded for `state` None); stop following."""
        now = self.clock.now()
        result = ("DeadlineExceeded" if state is None else "Failed" if state.error_code
                  else "Succeeded")
        if p.ref.kind == "ScheduledGcpCall":
            def part(status: Mapping[str, Any]) -> Part:
                run = next((r for r in recorded_runs(status)
                            if str(r.get("scheduleTime") or "") == p.run_key), None)
                if run is None or run.get("result") != "Running":
                    return Part(Owner.RELAY)  # trimmed away, or ended already
                record = finished(run, now=now, state=state, polls=p.polls,
                                  timeout_seconds=p.timeout_seconds)
                return runs_part(Owner.RELAY, status, record, p.history_limit)
        else:
            def part(status: Mapping[str, Any]) -> Part:
                op = dict(status.get("operation") or {})
                op.update(done=state is not None, polls=p.polls)
                if state is None:
                    op["error"] = {"code": 4, "message": f"not done within "
                                                         f"{p.timeout_seconds} s"}
                elif state.error_code:
                    op["error"] = {"code": state.error_code, "message": state.error_message}
                elif state.response is not None:
                    op["response"] = dict(state.response)
                return outcome_part(Owner.RELAY, status, now=now, created=True, exists=False,
                                    extra={"operation": op})
        try:
            written = await self.deps.status.write(p.ref, True, part)
        except Exception as exc:
            log.warning("the operation's outcome was not written: %s", classify(exc).message,
                        extra={"object": p.ref, "google": p.name})
            self._again(p)
            return
        self._pending.pop(p.key, None)
        self._set()
        OPERATIONS.labels(p.ref.namespace, result).inc()
        OPERATION_SECONDS.observe(max(0.0, (now - p.started).total_seconds()))
        if result == "Succeeded":
            self.deps.events.normal(p.ref, "OperationSucceeded", f"operation {p.name} completed")
        else:
            detail = (state.error_message if state is not None
                      else f"not done within {p.timeout_seconds} s")
            self.deps.events.warning(p.ref, "OperationFailed", f"operation {p.name}: {detail}")
        if p.ref.kind == "GcpTask" and written is not None:
            self.deps.poller.finished(p.ref, p.ttl_seconds, written.after)


def poll_auth(spec: ScheduledCallSpec | GcpTaskSpec) -> dict[str, Any]:
    """The token an operation's polls carry: the call's own kind, scope and account."""
    auth = spec.target.auth
    if auth is None:
        return {"auth_kind": None, "auth_email": None, "scope_or_audience": ""}
    token = auth.token
    if isinstance(token, OAuthToken):
        return {"auth_kind": "oauth", "auth_email": auth.service_account_email,
                "scope_or_audience": token.scope}
    return {"auth_kind": "oidc", "auth_email": auth.service_account_email,
            "scope_or_audience": token.audience}


def _resource(url: str) -> str:
    """`projects/<p>/...` out of a poll URL, for the per-project rate."""
    marker = url.find("projects/")
    return url[marker:] if marker >= 0 else ""

