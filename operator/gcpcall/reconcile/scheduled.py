"""Reconcile one ScheduledGcpCall with its Cloud Scheduler job.

Why this shape: desired (pure mapper from the parsed spec) vs observed, then the smallest
write that closes the gap (`converge`): create, adopt, `UpdateJob` with a mask of only the
differing fields, pause/resume; then run-now, then the status that reports it. Nothing is
written to Google when nothing differs, and status only when it changed. Errors are
classified once (`gcp.errors.classify`) into a Ready reason and a retry policy that the
kopf handler turns into a delay. Once in sync, the object joins the batched sync
(`reconcile.sync`), which watches its job from then on.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from gcpcall.api import naming
from gcpcall.api.conditions import find_condition
from gcpcall.api.errors import InvalidSpec
from gcpcall.api.ownership import Owner, Part
from gcpcall.api.scheduled_call import ScheduledCallSpec, parse_scheduled_call
from gcpcall.api.settled import RUN_REQUEST_ANNOTATION
from gcpcall.api.status import (
    ReadyReason,
    job_part,
    parse_time,
    ready_condition,
    reconciler_part,
    runs_part,
)
from gcpcall.gcp.errors import classify
from gcpcall.gcp.identity import GoogleIdentity, IdentityNotReady
from gcpcall.gcp.scheduler import Job, token_email
from gcpcall.gcp.scheduler_mapping import desired_job, observed_job
from gcpcall.reconcile.converge import UNKNOWN, AdoptionRefused, failure
from gcpcall.reconcile.deps import Deps
from gcpcall.reconcile.inputs import BodySourceMissing, resolve_body
from gcpcall.reconcile.objects import (
    ObjectGone,
    ObjectView,
    defaults_for,
    holding_finalizer,
    identity_key,
)
from gcpcall.reconcile.outcome import Outcome
from gcpcall.reconcile.progress import deletion_failure, reporting_if_slow
from gcpcall.reconcile.relay_target import RelayUnavailable, relay_target
from gcpcall.reconcile.status_writer import Contribute
from gcpcall.reconcile.tracked import Tracked

__all__ = [
    "KIND",
    "PLURAL",
    "delete_scheduled_call",
    "reconcile_scheduled_call",
    "resume_scheduled_call",
    "track_in_sync",
]

log = logging.getLogger(__name__)

KIND, PLURAL = "ScheduledGcpCall", "scheduledgcpcalls"


async def _parse(obj: ObjectView, deps: Deps) -> ScheduledCallSpec:
    return parse_scheduled_call(obj.spec,
                                await defaults_for(obj, deps.settings, deps.namespaces))


async def desired_for(
    obj: ObjectView, deps: Deps, spec: ScheduledCallSpec, identity: GoogleIdentity
) -> Job:
    """The job the spec asks for (a referenced body read now; Relay routed to the relay)."""
    cluster = deps.settings.cluster_name
    ns, name = obj.ref.namespace, obj.ref.name
    relay = relay_target(spec.delivery, deps.settings, obj.ref)
    body = None if relay is not None else await resolve_body(spec.target, ns, deps.kube)
    return desired_job(
        spec,
        naming.job_name(spec.project, spec.location, cluster, ns, name),
        naming.job_description(spec.description, cluster, ns, name),
        identity.email,
        body=body,
        relay=relay,
    )


def _ready_part(reason: ReadyReason, message: str, obj: ObjectView, **fields: Any) -> Part:
    return reconciler_part(ready_condition(reason, message), generation=obj.generation,
                           **fields)


async def _report(obj: ObjectView, deps: Deps, *parts: Part | Contribute) -> bool:
    deps.status.seen(obj.ref, obj.body or {})
    return await deps.status.write(obj.ref, obj.relay, *parts) is not None


def _runs_part(obj: ObjectView, history_limit: int) -> Contribute:
    """The run owner's part, bundled into the reconcile's write: LastRunSucceeded starts
    at NoRunYet, and a lowered historyLimit trims the runs at once."""
    owner = Owner.RELAY if obj.relay else Owner.SYNC
    return lambda status: runs_part(owner, status, None, history_limit)


def _identity_status(job: Job, spec: ScheduledCallSpec,
                     identity: GoogleIdentity) -> dict[str, str]:
    """The Kubernetes ServiceAccount acted as (after defaults) and its Google account."""
    out: dict[str, str] = {}
    if spec.service_account_name:
        out["serviceAccountName"] = spec.service_account_name
    email = identity.email or token_email(job)
    if email:
        out["googleServiceAccount"] = email
    return out


async def reconcile_scheduled_call(obj: ObjectView, deps: Deps) -> Outcome:
    """Make the job match the spec; report in status. Returns when to try again, if at all."""
    try:
        spec = await _parse(obj, deps)
    except InvalidSpec as e:
        return await _invalid(obj, deps, e)

    try:
        identity = await deps.identities.resolve(obj.ref.namespace, spec.service_account_name)
    except IdentityNotReady as e:
        await _report(obj, deps, _ready_part(ReadyReason.IDENTITY_NOT_READY, str(e), obj))
        return Outcome.retry_slow("IdentityNotReady")

    desired: Job | None = None
    try:
        desired = await desired_for(obj, deps, spec, identity)
        # The finalizer goes on in parallel with the whole write, status included.
        job = await holding_finalizer(obj, deps.kube,
                                      _apply(obj, deps, spec, desired, identity))
    except InvalidSpec as e:
        return await _invalid(obj, deps, e)
    except RelayUnavailable as e:
        message = str(e)
        if await _report(obj, deps, _ready_part(ReadyReason.RELAY_NOT_CONFIGURED, message, obj)):
            deps.events.warning(obj.ref, "RelayNotConfigured", message)
        return Outcome.done()  # a setting of the operator: it restarts to change it
    except BodySourceMissing as e:
        message = f"{e.field}: {e.message}"
        reason = ReadyReason.PERMISSION_DENIED if e.forbidden else ReadyReason.BODY_SOURCE_NOT_FOUND
        if await _report(obj, deps, _ready_part(reason, message, obj)):
            deps.events.warning(obj.ref, reason.value, message)
        return Outcome(0.0, reason.value)  # it may appear (or be granted) at any time
    except ObjectGone:
        # Deleted while the job was being made, so no deletion will come for it here.
        if desired is not None and obj.spec.get("deletionPolicy") != "Abandon":
            await _delete_orphan(deps, desired.name, identity)
        return Outcome.done()
    except AdoptionRefused as e:
        await _report(obj, deps, _ready_part(ReadyReason.ADOPTION_REFUSED, str(e), obj))
        deps.events.warning(obj.ref, "AdoptionRefused", str(e))
        return Outcome.done()
    except Exception as exc:  # every Google error ends up in status, classified once
        f = failure(exc)
        c = f.classification
        if c.reason == "Unexpected":
            log.exception("reconcile failed", extra={"object": obj.ref})
        if c.code == "UNAUTHENTICATED":
            # An expired or revoked token: drop it, and come back at once with a new one.
            deps.identities.invalidate(obj.ref.namespace, spec.service_account_name or "")
            c = dataclasses.replace(c, backoff="fast")
        await _report(obj, deps, _ready_part(f.reason, f.message, obj))
        deps.events.warning(obj.ref, "Failed", f.message)
        return Outcome.retry(c, deps.scheduler.recovery) if c.retryable else Outcome.done()

    deps.sync.track(Tracked.of(obj.ref, spec, identity_key(
        obj.ref.namespace, spec.service_account_name, deps.settings), job, desired,
        obj.generation, relay=obj.relay))
    return Outcome.done()


async def _invalid(obj: ObjectView, deps: Deps, e: InvalidSpec) -> Outcome:
    message = f"{e.field}: {e.message}"
    await _report(obj, deps, _ready_part(ReadyReason.INVALID_SPEC, message, obj))
    deps.events.warning(obj.ref, "InvalidSpec", message)
    deps.sync.untrack(obj.ref)
    return Outcome.done()  # nothing to retry until the spec changes


async def _apply(
    obj: ObjectView, deps: Deps, spec: ScheduledCallSpec, desired: Job,
    identity: GoogleIdentity,
) -> Job:
    """The Google writes a reconcile needs, then the status that reports them."""
    known = deps.status.known(obj.ref, obj.status).get("jobName") == desired.name
    progress = ReadyReason.UPDATING if known else ReadyReason.CREATING
    job = await reporting_if_slow(
        deps.converger.converge(obj.ref, desired, spec.paused, identity, actual=UNKNOWN,
                                known=known),
        lambda: _report(obj, deps, reconciler_part(ready_condition(
            progress, f"writing Cloud Scheduler job {desired.name}"))))
    await _retire_moved_job(obj, deps, job.name, identity)
    job, requested = await _run_if_requested(obj, deps, job, identity)
    observed = observed_job(job)
    reason = ReadyReason.PAUSED if spec.paused else ReadyReason.UP_TO_DATE
    message = "the job is paused" if spec.paused else "the Cloud Scheduler job matches the spec"
    parts = [
        _ready_part(reason, message, obj, job_name=job.name,
                    identity=_identity_status(job, spec, identity),
                    last_run_request=requested),
        job_part(observed),
    ]
    await _report(obj, deps, *parts, _runs_part(obj, spec.history_limit))
    return job


async def _delete_orphan(deps: Deps, job_name: str, identity: GoogleIdentity) -> None:
    try:
        await deps.scheduler.delete_job(job_name, identity)
    except Exception as exc:
        log.warning("job %s outlived its deleted object and could not be deleted: %s",
                    job_name, classify(exc).message)


async def _retire_moved_job(
    obj: ObjectView, deps: Deps, job_name: str, identity: GoogleIdentity
) -> None:
    """A new project or location means a new job: delete the one the object had before.

    Without this, editing `project` or `location` (or the namespace defaults they come
    from) would leave the old job running, unmanaged.
    """
    previous = deps.status.known(obj.ref, obj.status).get("jobName")
    if not previous or previous == job_name:
        return
    if obj.spec.get("deletionPolicy") != "Abandon":
        await deps.scheduler.delete_job(str(previous), identity)
        deps.events.normal(obj.ref, "Deleted", f"deleted {previous}: the job moved to {job_name}")


async def _run_if_requested(
    obj: ObjectView, deps: Deps, job: Job, identity: GoogleIdentity
) -> tuple[Job, str | None]:
    """RunJob once per new value of the run-now annotation: (the job, the value handled)."""
    requested = obj.annotations.get(RUN_REQUEST_ANNOTATION)
    current = deps.status.known(obj.ref, obj.status)
    if not requested or requested == current.get("lastRunRequest"):
        return job, None
    ran = await deps.scheduler.run_job(job.name, identity)
    # Record the handled value at once, so that nothing after this point can run it twice.
    await _report(obj, deps, reconciler_part(None, last_run_request=requested))
    deps.events.normal(obj.ref, "RunRequested", f"ran the job now (request {requested})")
    deps.sync.expect_run(obj.ref)
    return ran, requested


async def resume_scheduled_call(obj: ObjectView, deps: Deps) -> Outcome:
    """After an operator restart: objects already in sync cost no Google call here (see
    `track_in_sync`); any other is reconciled."""
    if await track_in_sync(obj, deps):
        return Outcome.done()
    return await reconcile_scheduled_call(obj, deps)


async def track_in_sync(obj: ObjectView, deps: Deps) -> bool:
    """An object listed after a restart whose status says it is in sync joins the sync
    registry marked "list soon", so one ListJobs per group checks them all (drift, missed
    runs) instead of a GetJob each. False: it needs a reconcile (nothing was tracked)."""
    if deps.sync.tracking(obj.ref.uid):
        return True
    deps.status.seen(obj.ref, obj.body or {})
    status = deps.status.known(obj.ref, obj.status)
    ready = find_condition(status.get("conditions"), "Ready") or {}
    requested = obj.annotations.get(RUN_REQUEST_ANNOTATION)
    in_sync = (
        status.get("observedGeneration") == obj.generation
        and ready.get("status") == "True"
        and bool(status.get("jobName"))
        and (requested is None or requested == status.get("lastRunRequest"))
    )
    if not in_sync:
        return False
    try:
        spec = await _parse(obj, deps)
        identity = await deps.identities.resolve(obj.ref.namespace, spec.service_account_name)
        desired = await desired_for(obj, deps, spec, identity)
    except (InvalidSpec, IdentityNotReady, BodySourceMissing, RelayUnavailable):
        return False
    next_run = status.get("nextRunTime")
    deps.sync.track(
        Tracked.of(obj.ref, spec, identity_key(obj.ref.namespace, spec.service_account_name,
                                               deps.settings),
                   None, desired, obj.generation, relay=obj.relay,
                   next_run=parse_time(next_run) if next_run else None),
        list_soon=True,
    )
    return True


async def delete_scheduled_call(obj: ObjectView, deps: Deps) -> Outcome:
    """Honour deletionPolicy: Delete removes the job (NOT_FOUND counts as done)."""
    deps.sync.untrack(obj.ref)
    if obj.spec.get("deletionPolicy") == "Abandon":
        deps.events.normal(obj.ref, "Abandoned", "kept the Cloud Scheduler job")
        deps.status.forget(obj.ref)
        return Outcome.done()
    job_name = deps.status.known(obj.ref, obj.status).get("jobName")
    if not job_name:
        return Outcome.done()  # never created
    try:
        spec = await _parse(obj, deps)
        ksa = spec.service_account_name
    except InvalidSpec:
        # The spec no longer parses (e.g. a namespace default went away); the job name in
        # status is all we need, with the identity the spec names (or the default).
        ksa = obj.spec.get("serviceAccountName") or deps.settings.default_service_account
    try:
        identity = await deps.identities.resolve(obj.ref.namespace, ksa)
        deleted = await deps.scheduler.delete_job(str(job_name), identity)
    except Exception as exc:
        reason, message = deletion_failure(exc)
        await _report(obj, deps, _ready_part(reason, message, obj))
        deps.events.warning(obj.ref, reason.value, message)
        return Outcome.retry_deletion(reason.value)
    if deleted:
        deps.events.normal(obj.ref, "Deleted", f"deleted Cloud Scheduler job {job_name}")
    deps.status.forget(obj.ref)
    return Outcome.done()
