"""The relay's decision for one request: refuse it, or make the object's call and record it.

Why this order: the relay is a public endpoint, and a Google-signed ID token proves only
that some Google service account asked. So, before anything else is read, the token must
be Google's, for the relay's audience, with a verified email (401 otherwise); then the
object the body names must exist with that uid and `delivery: Relay`, and the token's
email must be the Google service account that object's identity resolves to (403
otherwise). Refusals call nothing and write nothing, and are counted by reason. Only then
is the call made, and it is the one the object's spec describes, with the object's own
credentials; nothing the caller sent (URL, headers, body) is forwarded.

Runs: one run per scheduled execution (`api.relay_runs`); after a success, later attempts
of that execution are answered 200 without a call. The relay answers with the target's
status code, so Google's retry policy applies to the real call.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gcpcall.api.errors import InvalidSpec
from gcpcall.api.gcp_task import GcpTaskSpec
from gcpcall.api.observed import ObservedAttempt, format_time
from gcpcall.api.operations import Found, detect, read_state
from gcpcall.api.ownership import Owner, Part
from gcpcall.api.relay_envelope import EnvelopeError, parse_envelope
from gcpcall.api.relay_runs import (
    CallOutcome,
    already_exists,
    find_run,
    finished,
    following,
    outcome_of,
    relay_run,
    run_id,
    schedule_time_header,
    task_attempt,
    task_eta,
    trimmed,
)
from gcpcall.api.request import resolve_request
from gcpcall.api.scheduled_call import ScheduledCallSpec
from gcpcall.api.status import OperationRecord, recorded_runs, runs_part
from gcpcall.api.task_status import TERMINAL_PHASES, outcome_part
from gcpcall.api.templates import RunContext, render_request, uses_run_id
from gcpcall.gcp.errors import classify
from gcpcall.gcp.id_tokens import IdTokenVerifier, TokenRefused
from gcpcall.gcp.identity import IdentityNotReady
from gcpcall.gcp.target_calls import TargetCaller
from gcpcall.kube import ObjectRef
from gcpcall.observe.metrics import RELAY_CALL_SECONDS, RELAY_CALLS, RELAY_REFUSALS, RELAY_REQUESTS
from gcpcall.reconcile.deps import Deps
from gcpcall.reconcile.inputs import BodySourceMissing, resolve_body
from gcpcall.reconcile.objects import ObjectView, defaults_for
from gcpcall.reconcile.task_events import post_transitions
from gcpcall.relay.follower import OperationFollower, Pending, poll_auth
from gcpcall.relay.specs import ParsedSpecs

__all__ = ["Answer", "Relay", "RelayRequest"]

log = logging.getLogger(__name__)

_MARGIN = 5.0  # seconds left to answer Google within its attempt deadline
_MIN_CALL = 10.0


@dataclass(frozen=True)
class RelayRequest:
    """What arrived: headers with lower-case names, the body (already size-bounded)."""

    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]


class _Refused(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class Relay:
    def __init__(self, deps: Deps, verifier: IdTokenVerifier, caller: TargetCaller,
                 follower: OperationFollower | None = None) -> None:
        self.deps = deps
        self.verifier = verifier
        self.caller = caller
        # In the operator's process the relay hands a started operation to the follower at
        # once; a relay of its own leaves it in status, where the operator's watch finds it.
        self.follower = follower
        self.specs = ParsedSpecs()
        if not deps.settings.relay_url:
            raise ValueError("the relay needs its public URL (GCPCALL_RELAY_URL)")
        self.audience = deps.settings.relay_url

    async def handle(self, request: RelayRequest) -> Answer:
        try:
            return await self._handle(request)
        except Exception:
            # A bug or an unreachable API server: Google retries; nothing of ours leaks.
            log.exception("the relay failed on a request")
            return Answer(500, {"error": "internal"})

    async def _handle(self, request: RelayRequest) -> Answer:
        try:
            obj, spec, email = await self._admit(request)
        except _Refused as refusal:
            RELAY_REFUSALS.labels(str(refusal.status), refusal.reason).inc()
            RELAY_REQUESTS.labels("", "refused").inc()
            log.warning("relay refused a request (%d %s): %s", refusal.status, refusal.reason,
                        refusal)
            return Answer(refusal.status, {"error": refusal.reason})
        if isinstance(spec, ScheduledCallSpec):
            return await self._run_call(request, obj, spec, email)
        return await self._run_task(request, obj, spec, email)

    # who is asking, for which object ---------------------------------------------------
    async def _admit(
        self, request: RelayRequest
    ) -> tuple[ObjectView, ScheduledCallSpec | GcpTaskSpec, str]:
        """The object, its spec and the Google service account it acts as."""
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _Refused(401, "missing", "no bearer token")
        try:
            claims = await self.verifier.verify(token.strip(), self.audience)
        except TokenRefused as e:
            raise _Refused(401, e.reason, str(e)) from None
        try:
            envelope = parse_envelope(request.body)
        except EnvelopeError as e:
            raise _Refused(403, "envelope", str(e)) from None
        ref = ObjectRef(envelope.kind, envelope.plural, envelope.namespace, envelope.name,
                        envelope.uid)
        doc = self.deps.recent.get(envelope.uid) or await self.deps.kube.get_object(ref)
        meta = (doc or {}).get("metadata") or {}
        if doc is not None and (meta.get("name"), meta.get("namespace")) != (ref.name,
                                                                           ref.namespace):
            doc = None  # a uid from another object: no such object
        if doc is None or (doc.get("metadata") or {}).get("uid") != envelope.uid:
            raise _Refused(403, "object", f"no {ref.kind} {ref.namespace}/{ref.name} with "
                                          "that uid")
        obj = ObjectView.from_body(doc, ref.kind, ref.plural)
        if not obj.relay:
            raise _Refused(403, "delivery", f"{ref.namespace}/{ref.name} is not delivered "
                                            "through the relay")
        if obj.seen is not None and obj.seen.deleting:
            raise _Refused(403, "deleting", f"{ref.namespace}/{ref.name} is being deleted")
        defaults = await defaults_for(obj, self.deps.settings, self.deps.namespaces)
        try:
            spec = self.specs.parse(obj, defaults)
        except InvalidSpec as e:
            raise _Refused(403, "spec", f"the object's spec is invalid: {e}") from None
        try:
            identity = await self.deps.identities.resolve(ref.namespace,
                                                          spec.service_account_name)
        except IdentityNotReady as e:
            raise _Refused(403, "identity", f"the object's identity is not ready: {e}") from None
        if not identity.email or identity.email.lower() != claims.email:
            raise _Refused(403, "email", f"the token is {claims.email}'s, and "
                                         f"{ref.namespace}/{ref.name} acts as "
                                         f"{identity.email or 'no service account'}")
        self.deps.status.seen(ref, doc)
        return obj, spec, identity.email

    # the call ----------------------------------------------------------------------------
    async def _call(
        self, obj: ObjectView, spec: ScheduledCallSpec | GcpTaskSpec, email: str,
        within: float, context: Callable[[], RunContext],
    ) -> tuple[CallOutcome, dict[str, Any] | None, str]:
        """Make the spec's request, rendered for this run (`context`, made only when the
        target has templates), as the object's identity (`email`, its Google service
        account): (the outcome, the rendered request to record, the uri called)."""
        ns = obj.ref.namespace
        try:
            body = await resolve_body(spec.target, ns, self.deps.kube)
        except BodySourceMissing as e:
            return CallOutcome(None, error=f"{e.field}: {e.message}"), None, spec.target.uri
        req = resolve_request(spec.target, email, body=body)
        try:
            rendered = render_request(spec.target, context, req.body,
                                      allow_http=self.deps.settings.endpoints.allow_http_targets)
        except InvalidSpec as e:
            return CallOutcome(None, error=str(e)), None, spec.target.uri
        headers = dict(rendered.headers)
        auth = spec.target.auth
        if auth is not None and req.auth_kind is not None:
            try:
                token = await self.deps.identities.call_token(
                    ns, spec.service_account_name, kind=req.auth_kind,
                    email=auth.service_account_email,
                    scope_or_audience=req.scope if req.auth_kind == "oauth" else req.audience)
            except Exception as exc:
                message = str(exc) if isinstance(exc, IdentityNotReady) else classify(
                    exc).message
                return (CallOutcome(None, error=f"no token for the call: {message}"),
                        None, rendered.uri)
            if token:
                headers["Authorization"] = f"Bearer {token}"
        started = time.monotonic()
        outcome = await self.caller.call(req.method.value, rendered.uri, headers, rendered.body,
                                         within)
        RELAY_CALL_SECONDS.observe(time.monotonic() - started)
        if already_exists(outcome) and uses_run_id(rendered):
            outcome = dataclasses.replace(outcome, already_made=True)
        RELAY_CALLS.labels(spec.target.host, str(outcome.code)).inc()
        return outcome, rendered.record() if rendered.fields else None, rendered.uri

    async def _run_call(self, request: RelayRequest, obj: ObjectView,
                        spec: ScheduledCallSpec, email: str) -> Answer:
        now = self.deps.clock.now()
        scheduled = schedule_time_header(request.headers.get("x-cloudscheduler-scheduletime"))
        schedule_time = scheduled or now.replace(microsecond=0)
        # A new scheduled execution (the common case) has no run yet: found without
        # decoding the object's status, which holds up to `historyLimit` runs.
        previous = (find_run(recorded_runs(self.deps.status.known(obj.ref, obj.status)),
                             schedule_time)
                    if self.deps.status.may_hold(obj.ref, format_time(schedule_time))
                    else None)
        if previous is not None and previous.get("result") in ("Succeeded", "Running"):
            # a retry after a success (or after the operation it started): no second call
            RELAY_REQUESTS.labels(obj.ref.kind, "duplicate").inc()
            return Answer(200, {"result": previous.get("result"),
                                "note": "this run was already made"})
        within = max(_MIN_CALL, spec.attempt_deadline_seconds - _MARGIN)
        attempt = int((previous or {}).get("attempts") or 0) + 1

        def context() -> RunContext:
            return RunContext(run_id(obj.ref.uid, schedule_time), schedule_time, attempt,
                              obj.ref.namespace, obj.ref.name, now)

        outcome, request_record, uri = await self._call(obj, spec, email, within, context)
        RELAY_REQUESTS.labels(obj.ref.kind, "called").inc()
        done = self.deps.clock.now()
        found = self._operation(spec, outcome, uri)
        timeout = spec.operation.timeout_seconds if spec.operation else 0
        deadline = done + datetime.timedelta(seconds=timeout)

        def part(status: Mapping[str, Any]) -> Part:
            before = find_run(recorded_runs(status), schedule_time)
            record = relay_run(before, uid=obj.ref.uid, schedule_time=schedule_time, now=done,
                               outcome=outcome, host=spec.target.host, request=request_record)
            if isinstance(found, str):
                record = dataclasses.replace(record, message=f"{record.message}; {found}")
            elif found is not None:
                op = OperationRecord(found.name, False, poll_url=found.poll_url,
                                     deadline=deadline)
                record = following(record, op)
                state = read_state(found.style, outcome.body)
                if state is not None and state.done:  # done at once: nothing to follow
                    record = finished(record.to_status(), now=done, state=state, polls=0,
                                      timeout_seconds=timeout)
            return runs_part(Owner.RELAY, status, record, spec.history_limit)

        written = await self._record(obj, part)
        if isinstance(found, Found) and written:
            run = find_run(recorded_runs(self.deps.status.known(obj.ref)), schedule_time)
            if run is not None and run.get("result") == "Running":
                self._follow(obj, spec, found, format_time(schedule_time), deadline, done)
        return self._answer(outcome)

    def _operation(self, spec: ScheduledCallSpec | GcpTaskSpec, outcome: CallOutcome,
                   uri: str) -> Found | str | None:
        """The operation the call (to `uri`) started, when the spec asks to follow one."""
        if spec.operation is None or not spec.operation.follow or not outcome.succeeded \
                or outcome.already_made:
            return None
        return detect(uri, outcome.body)

    def _follow(self, obj: ObjectView, spec: ScheduledCallSpec | GcpTaskSpec, found: Found,
                run_key: str, deadline: datetime.datetime, started: datetime.datetime) -> None:
        if self.follower is None:
            return
        self.follower.follow(Pending(
            ref=obj.ref, run_key=run_key, style=found.style, name=found.name,
            poll_url=found.poll_url, deadline=deadline, started=started,
            service_account=spec.service_account_name, **poll_auth(spec),
            history_limit=getattr(spec, "history_limit", 10),
            ttl_seconds=getattr(spec, "ttl_seconds_after_finished", None),
            timeout_seconds=spec.operation.timeout_seconds if spec.operation else 3600,
        ))

    async def _run_task(self, request: RelayRequest, obj: ObjectView,
                        spec: GcpTaskSpec, email: str) -> Answer:
        current = self.deps.status.known(obj.ref, obj.status)
        if current.get("phase") == "Succeeded":
            RELAY_REQUESTS.labels(obj.ref.kind, "duplicate").inc()
            return Answer(200, {"result": "Succeeded", "note": "this task already succeeded"})
        if current.get("phase") in TERMINAL_PHASES:
            RELAY_REQUESTS.labels(obj.ref.kind, "duplicate").inc()
            return Answer(200, {"result": current.get("phase"), "note": "already finished"})
        started = self.deps.clock.now()
        within = max(_MIN_CALL, spec.dispatch_deadline_seconds - _MARGIN)
        number = task_attempt(request.headers.get("x-cloudtasks-taskretrycount"))
        eta = task_eta(request.headers.get("x-cloudtasks-tasketa"))
        # a task is one execution: its id is the object's, whatever attempt this is
        execution = (obj.created or started).replace(microsecond=0)

        def context() -> RunContext:
            return RunContext(run_id(obj.ref.uid, execution), execution, number or 1,
                              obj.ref.namespace, obj.ref.name, started)

        outcome, request_record, uri = await self._call(obj, spec, email, within, context)
        RELAY_REQUESTS.labels(obj.ref.kind, "called").inc()
        _, code, message = outcome_of(outcome, spec.target.host)
        attempt = ObservedAttempt(dispatch_time=started, code=code,
                                  http_status=outcome.http_status, message=message)
        done = self.deps.clock.now()
        found = self._operation(spec, outcome, uri)
        timeout = spec.operation.timeout_seconds if spec.operation else 0
        deadline = done + datetime.timedelta(seconds=timeout)
        extra: dict[str, Any] = {}
        if isinstance(found, Found):
            op = OperationRecord(found.name, False, poll_url=found.poll_url, deadline=deadline)
            state = read_state(found.style, outcome.body)
            if state is not None and state.done:
                op = OperationRecord(found.name, True, state.error_code, state.error_message,
                                     state.response, poll_url=found.poll_url, polls=0)
            extra["operation"] = op.to_status()

        def part(status: Mapping[str, Any]) -> Part:
            base = outcome_part(Owner.RELAY, status, now=done, created=True, exists=True,
                                attempt=attempt, extra=extra)
            fields = dict(base.fields)
            last = dict(fields.get("lastAttempt") or {})
            if number is not None:
                last["attempt"] = number
            if eta is not None:
                last["scheduleTime"] = format_time(eta)
            if outcome.body:
                last["response"] = trimmed(outcome.body)
            if request_record is not None:
                last["request"] = request_record
            if isinstance(found, str):
                last["message"] = f"{last.get('message', '')}; {found}"
            fields["lastAttempt"] = last
            return Part(Owner.RELAY, fields, base.conditions)

        written = await self._record(obj, part)
        if "operation" in extra and not extra["operation"]["done"] and written:
            assert isinstance(found, Found)
            self._follow(obj, spec, found, "", deadline, done)
        return self._answer(outcome)

    async def _record(self, obj: ObjectView, part: Any) -> bool:
        """Write the relay's part; False when it could not be written."""
        try:
            written = await self.deps.status.write(obj.ref, True, part)
        except Exception as exc:
            # The call was made: answering with its status is still right (a retry would
            # call again); the run is missing from status, which the log says.
            log.error("the relay's record of this run was not written: %s",
                      classify(exc).message, extra={"object": obj.ref})
            return False
        if obj.ref.kind == "GcpTask":
            post_transitions(self.deps.events, obj.ref, written)
        return True

    @staticmethod
    def _answer(outcome: CallOutcome) -> Answer:
        if outcome.http_status is not None:
            return Answer(outcome.http_status, {"httpStatus": outcome.http_status})
        return Answer(504 if outcome.timed_out else 502, {"error": outcome.error[:200]})


