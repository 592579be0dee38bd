"""Reconcile one ScheduledGcpCall with its Cloud Scheduler job.

Why this shape: desired (pure mapper from the parsed spec) vs observed (one GET by the
deterministic job name), then the smallest write that closes the gap: create, adopt,
`UpdateJob` with a mask of only the differing fields, pause/resume, run-now. Nothing is
written to Google when nothing differs, and status is written only when it changed.
Errors are classified once (`gcp.errors.classify`) into a condition reason and a retry
policy that the kopf handler turns into a delay.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
from collections.abc import Awaitable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from gcpcall.api import naming
from gcpcall.api.common import Delivery
from gcpcall.api.conditions import find_condition
from gcpcall.api.errors import InvalidSpec
from gcpcall.api.placement import Defaults
from gcpcall.api.scheduled_call import ScheduledCallSpec, parse_scheduled_call
from gcpcall.api.settled import RUN_REQUEST_ANNOTATION
from gcpcall.api.status import ReadyReason, desired_call_status, parse_time, ready_condition
from gcpcall.config import IdentityMode
from gcpcall.gcp.errors import classify
from gcpcall.gcp.identity import GoogleIdentity, IdentityNotReady
from gcpcall.gcp.scheduler import Job, token_email
from gcpcall.gcp.scheduler_mapping import desired_job, observed_job, update_mask
from gcpcall.kube import ObjectRef
from gcpcall.reconcile.deps import Deps
from gcpcall.reconcile.finalizer import FINALIZER, Held, Snapshot, hold
from gcpcall.reconcile.inputs import resolve_body
from gcpcall.reconcile.outcome import Outcome
from gcpcall.reconcile.sync import ScheduledSync, Tracked

__all__ = [
    "FINALIZER",
    "RUN_REQUEST_ANNOTATION",
    "ObjectGone",
    "ObjectView",
    "delete_scheduled_call",
    "holding_finalizer",
    "reconcile_scheduled_call",
    "resume_scheduled_call",
]

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class ObjectView:
    """The parts of one of our objects that a reconcile reads."""

    ref: ObjectRef
    generation: int
    spec: Mapping[str, Any]
    status: Mapping[str, Any]
    annotations: Mapping[str, str]
    created: datetime.datetime | None = None
    # what our finalizer's conditional patches test against; None: not known, read first
    seen: Snapshot | None = None

    @classmethod
    def from_body(cls, body: Mapping[str, Any], kind: str, plural: str) -> ObjectView:
        meta = body.get("metadata") or {}
        stamp = meta.get("creationTimestamp")
        return cls(
            ref=ObjectRef(kind, plural, meta["namespace"], meta["name"], meta.get("uid", "")),
            generation=int(meta.get("generation") or 0),
            spec=body.get("spec") or {},
            status=body.get("status") or {},
            annotations=meta.get("annotations") or {},
            created=parse_time(stamp) if stamp else None,
            seen=Snapshot.of(meta),
        )

    @property
    def finalizers(self) -> tuple[str, ...]:
        return self.seen.finalizers if self.seen else ()


class ObjectGone(Exception):
    """The object was deleted while its first Google write was under way."""


async def holding_finalizer(obj: ObjectView, deps: Deps, write: Awaitable[T]) -> T:
    """Run the first Google write of an object while our finalizer is added, in parallel.

    Why in parallel: in sequence, the finalizer patch would sit in front of every new
    object's first call. If the object turns out to be gone or being deleted without our
    finalizer, `ObjectGone` tells the caller to undo what the write made.
    """
    holding = asyncio.ensure_future(hold(obj.ref, obj.seen, deps.kube))
    try:
        result = await write
    finally:
        held = await holding
    if held is not Held.HELD:
        raise ObjectGone(f"{obj.ref.namespace}/{obj.ref.name} is {held.value}")
    return result


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _sync(deps: Deps) -> ScheduledSync:
    assert deps.scheduled_sync is not None, "the sync loop is built at startup"
    return deps.scheduled_sync


async def defaults_for(obj: ObjectView, deps: Deps) -> Defaults:
    settings = deps.settings
    return Defaults(
        project=settings.default_project,
        location=settings.default_location,
        service_account_name=settings.default_service_account,
        namespace_annotations=await deps.namespaces.annotations(obj.ref.namespace),
        allow_http=settings.endpoints.allow_http_targets,
        now=obj.created,
    )


def refuse_relay(delivery: Delivery) -> None:
    """The relay is specified in the API but not shipped in this version: say so."""
    if delivery is Delivery.RELAY:
        raise InvalidSpec(
            "spec.delivery",
            "delivery: Relay is not available in this version of the operator; use Direct",
        )


def identity_key(namespace: str, service_account: str | None, deps: Deps) -> Hashable:
    """Objects that share credentials share a List call: per KSA, or one for the operator."""
    if deps.settings.identity_mode is IdentityMode.OPERATOR:
        return "operator"
    return (namespace, service_account)


async def _desired(
    obj: ObjectView, deps: Deps, spec: ScheduledCallSpec, identity: GoogleIdentity
) -> Job:
    cluster = deps.settings.cluster_name
    ns, name = obj.ref.namespace, obj.ref.name
    body = await resolve_body(spec.target, ns, deps.kube)
    return desired_job(
        spec,
        naming.job_name(spec.project, spec.location, cluster, ns, name),
        naming.job_description(spec.description, cluster, ns, name),
        identity.email,
        body=body,
    )


async def _write(
    obj: ObjectView, deps: Deps, reason: ReadyReason, message: str, **fields: Any
) -> None:
    """The one way this reconcile reports: Ready plus whatever it observed."""
    current = deps.status.known(obj.ref, obj.status)
    desired = desired_call_status(
        current, now=_now(), generation=obj.generation,
        ready=ready_condition(reason, message), **fields,
    )
    await deps.status.write(obj.ref, current, desired)


def _identity_status(job: Job, identity: GoogleIdentity) -> dict[str, str]:
    email = identity.email or token_email(job)
    return {"googleServiceAccount": email} if email else {}


async def reconcile_scheduled_call(obj: ObjectView, deps: Deps) -> Outcome:
    """Make the job match the spec; report in status. Returns when to try again, if at all."""
    try:
        spec = parse_scheduled_call(obj.spec, await defaults_for(obj, deps))
        refuse_relay(spec.delivery)
    except InvalidSpec as e:
        message = f"{e.field}: {e.message}"
        await _write(obj, deps, ReadyReason.INVALID_SPEC, message)
        deps.events.warning(obj.ref, "InvalidSpec", message)
        return Outcome.done()  # nothing to retry until the spec changes

    try:
        identity = await deps.identities.resolve(obj.ref.namespace, spec.service_account_name)
    except IdentityNotReady as e:
        await _write(obj, deps, ReadyReason.IDENTITY_NOT_READY, str(e))
        return Outcome.retry_slow("IdentityNotReady")

    try:
        desired = await _desired(obj, deps, spec, identity)
        # The finalizer goes on in parallel with the whole write, status included.
        job = await holding_finalizer(obj, deps, _apply(obj, deps, spec, desired, identity))
    except InvalidSpec as e:
        message = f"{e.field}: {e.message}"
        await _write(obj, deps, ReadyReason.INVALID_SPEC, message)
        deps.events.warning(obj.ref, "InvalidSpec", message)
        return Outcome.done()
    except ObjectGone:
        # Deleted while the job was being made, so no deletion will come for it here.
        if obj.spec.get("deletionPolicy") != "Abandon":
            await _delete_orphan(deps, desired.name, identity)
        return Outcome.done()
    except AdoptionRefused as e:
        await _write(obj, deps, ReadyReason.ADOPTION_REFUSED, str(e))
        deps.events.warning(obj.ref, "AdoptionRefused", str(e))
        return Outcome.done()
    except Exception as exc:  # every Google error ends up in status, classified once
        c = classify(exc)
        if c.reason == "Unexpected":
            log.exception("reconcile of %s/%s failed", obj.ref.namespace, obj.ref.name)
        if c.code == "UNAUTHENTICATED":
            # An expired or revoked token: drop it, and come back at once with a new one.
            deps.identities.invalidate(obj.ref.namespace, spec.service_account_name or "")
            c = dataclasses.replace(c, backoff="fast")
        await _write(obj, deps, _ready_reason(c.reason), c.message)
        deps.events.warning(obj.ref, "Failed", c.message)
        return Outcome.retry(c) if c.retryable else Outcome.done()

    _sync(deps).track(Tracked.from_reconcile(
        obj.ref, spec, identity_key(obj.ref.namespace, spec.service_account_name, deps),
        job, desired, obj.generation,
    ))
    return Outcome.done()


async def _apply(
    obj: ObjectView, deps: Deps, spec: ScheduledCallSpec, desired: Job,
    identity: GoogleIdentity,
) -> Job:
    """The Google writes a reconcile needs, then the status that reports them."""
    job = await _converge(obj, deps, spec, desired, identity)
    await _retire_moved_job(obj, deps, job.name, identity)
    job = await _run_if_requested(obj, deps, job, identity)
    await _write(
        obj, deps,
        ReadyReason.PAUSED if spec.paused else ReadyReason.UP_TO_DATE,
        "the job is paused" if spec.paused else "the Cloud Scheduler job matches the spec",
        job=observed_job(job),
        identity=_identity_status(job, identity),
        history_limit=spec.history_limit,
        last_run_request=obj.annotations.get(RUN_REQUEST_ANNOTATION),
    )
    return job


async def _delete_orphan(deps: Deps, job_name: str, identity: GoogleIdentity) -> None:
    try:
        await deps.scheduler.delete_job(job_name, identity)
    except Exception as exc:
        log.warning("job %s outlived its deleted object and could not be deleted: %s",
                    job_name, classify(exc).message)


def _ready_reason(reason: str) -> ReadyReason:
    try:
        return ReadyReason(reason)
    except ValueError:  # "Unexpected" and the like: a transient failure as far as users see
        return ReadyReason.GCP_ERROR


async def _converge(
    obj: ObjectView, deps: Deps, spec: ScheduledCallSpec, desired: Job,
    identity: GoogleIdentity,
) -> Job:
    known = deps.status.known(obj.ref, obj.status).get("jobName") == desired.name
    # A new object most likely has no job yet: create first, and look only if it exists
    # (adoption). An object we synced before: look first, it most likely exists.
    actual = None if not known else await deps.scheduler.get_job(desired.name, identity)
    if actual is None:
        created = await deps.scheduler.create_job_or_none(
            desired.name.rsplit("/jobs/", 1)[0], desired, identity
        )
        if created is not None:
            deps.events.normal(obj.ref, "Created", f"created Cloud Scheduler job {created.name}")
            actual = created
        else:
            actual = await deps.scheduler.get_job(desired.name, identity)
            if actual is None:  # deleted between our create and get: try again soon
                raise RuntimeError(f"{desired.name} exists and vanished; retrying")
            actual = await _adopt_or_update(obj, deps, desired, actual, identity)
    else:
        actual = await _adopt_or_update(obj, deps, desired, actual, identity)
    actual, action = await deps.scheduler.ensure_state(actual, spec.paused, identity)
    if action:
        deps.events.normal(obj.ref, action, f"{action.lower()} the Cloud Scheduler job")
    return actual


async def _adopt_or_update(
    obj: ObjectView, deps: Deps, desired: Job, actual: Job, identity: GoogleIdentity
) -> Job:
    owner = naming.parse_marker(actual.description)
    mine = naming.ObjectKey(deps.settings.cluster_name, obj.ref.namespace, obj.ref.name)
    if owner is not None and owner != mine:
        raise AdoptionRefused(actual.name, f"{owner.cluster}/{owner.namespace}/{owner.name}")
    mask = update_mask(desired, actual)
    if not mask:
        return actual
    updated = await deps.scheduler.update_job(desired, mask, identity)
    verb = "adopted and updated" if owner is None else "updated"
    deps.events.normal(obj.ref, "Updated", f"{verb} {', '.join(mask)}")
    return updated


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
) -> Job:
    requested = obj.annotations.get(RUN_REQUEST_ANNOTATION)
    current = deps.status.known(obj.ref, obj.status)
    if not requested or requested == current.get("lastRunRequest"):
        return job
    ran = await deps.scheduler.run_job(job.name, identity)
    # Record the handled value at once, so that nothing after this point can run it twice.
    await deps.status.write(obj.ref, current, {"lastRunRequest": requested})
    deps.events.normal(obj.ref, "RunRequested", f"ran the job now (request {requested})")
    _sync(deps).expect_run(obj.ref)
    return ran


class AdoptionRefused(Exception):
    """The job exists but its description marker names another object."""

    def __init__(self, job_name: str, owner: str) -> None:
        super().__init__(
            f"job {job_name} is managed by {owner}, not by this object; "
            "rename this object or delete that job"
        )


async def resume_scheduled_call(obj: ObjectView, deps: Deps) -> Outcome:
    """After an operator restart: objects already in sync cost no Google call here.

    They join the sync registry marked "list soon", so one ListJobs per group checks them
    all (drift, missed runs) instead of a GetJob each.
    """
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
        return await reconcile_scheduled_call(obj, deps)
    try:
        spec = parse_scheduled_call(obj.spec, await defaults_for(obj, deps))
        identity = await deps.identities.resolve(obj.ref.namespace, spec.service_account_name)
        desired = await _desired(obj, deps, spec, identity)
    except (InvalidSpec, IdentityNotReady):
        return await reconcile_scheduled_call(obj, deps)
    next_run = status.get("nextRunTime")
    deps.status.remember(obj.ref, obj.status)
    _sync(deps).track(
        Tracked(
            ref=obj.ref, namespace=obj.ref.namespace,
            service_account=spec.service_account_name,
            group=(identity_key(obj.ref.namespace, spec.service_account_name, deps),
                   spec.project, spec.location),
            job_name=desired.name, desired=desired, paused=spec.paused,
            history_limit=spec.history_limit, generation=obj.generation,
            next_run=parse_time(next_run) if next_run else None,
        ),
        list_soon=True,
    )
    return Outcome.done()


async def delete_scheduled_call(obj: ObjectView, deps: Deps) -> Outcome:
    """Honour deletionPolicy: Delete removes the job (NOT_FOUND counts as done)."""
    _sync(deps).untrack(obj.ref)
    if obj.spec.get("deletionPolicy") == "Abandon":
        deps.events.normal(obj.ref, "Abandoned", "kept the Cloud Scheduler job")
        deps.status.forget(obj.ref)
        return Outcome.done()
    job_name = deps.status.known(obj.ref, obj.status).get("jobName")
    if not job_name:
        return Outcome.done()  # never created
    try:
        spec = parse_scheduled_call(obj.spec, await defaults_for(obj, deps))
        identity = await deps.identities.resolve(obj.ref.namespace, spec.service_account_name)
        deleted = await deps.scheduler.delete_job(job_name, identity)
    except InvalidSpec:
        # The spec no longer parses (e.g. a namespace default went away); the job name in
        # status is all we need, with the identity the spec names (or the default).
        return await _delete_unparsed(obj, deps, job_name)
    except Exception as exc:
        message = str(exc) if isinstance(exc, IdentityNotReady) else classify(exc).message
        await _write(obj, deps, ReadyReason.DELETION_BLOCKED, message)
        deps.events.warning(obj.ref, "DeletionBlocked", message)
        return Outcome.retry_deletion()
    if deleted:
        deps.events.normal(obj.ref, "Deleted", f"deleted Cloud Scheduler job {job_name}")
    deps.status.forget(obj.ref)
    return Outcome.done()


async def _delete_unparsed(obj: ObjectView, deps: Deps, job_name: str) -> Outcome:
    ksa = obj.spec.get("serviceAccountName") or deps.settings.default_service_account
    try:
        identity = await deps.identities.resolve(obj.ref.namespace, ksa)
        await deps.scheduler.delete_job(job_name, identity)
    except Exception as exc:
        message = str(exc) if isinstance(exc, IdentityNotReady) else classify(exc).message
        await _write(obj, deps, ReadyReason.DELETION_BLOCKED, message)
        return Outcome.retry_deletion()
    deps.status.forget(obj.ref)
    return Outcome.done()

