"""Reconcile one GcpTask: create its Cloud Task exactly once, then hand it to the poller.

Why this shape: a Cloud Task cannot be updated and its id is derived from the object's
uid, so "create" is the only write and it is safe to repeat: CreateTask with that id, and
ALREADY_EXISTS means an earlier attempt (before a crash) created it, so GET it; NOT_FOUND
on that GET means it already ran and Cloud Tasks deleted it. Everything after the create
(attempts, outcome) is the poller's (`task_poller`) or, with Relay delivery, the relay's.
Deletion honours `deletionPolicy` and calls nothing for a finished task. Errors are
classified once (`gcp.errors.classify`); a missing queue is waited for with one GetQueue
per queue (`task_queues`) rather than a retried CreateTask per object.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from gcpcall.api import naming
from gcpcall.api.common import DeletionPolicy
from gcpcall.api.conditions import find_condition
from gcpcall.api.errors import InvalidSpec
from gcpcall.api.gcp_task import GcpTaskSpec, parse_gcp_task
from gcpcall.api.observed import ObservedTask
from gcpcall.api.ownership import Owner, Part
from gcpcall.api.status import ReadyReason, ready_condition, reconciler_part
from gcpcall.api.task_status import TERMINAL_PHASES, outcome_part, read_part
from gcpcall.gcp.errors import classify
from gcpcall.gcp.identity import GoogleIdentity, IdentityNotReady
from gcpcall.gcp.tasks_mapping import desired_task
from gcpcall.reconcile.deps import Deps
from gcpcall.reconcile.inputs import BodySourceMissing, resolve_body
from gcpcall.reconcile.objects import (
    ObjectGone,
    ObjectView,
    defaults_for,
    holding_finalizer,
    identity_key,
    ready_reason,
)
from gcpcall.reconcile.outcome import Outcome
from gcpcall.reconcile.progress import deletion_failure, reporting_if_slow
from gcpcall.reconcile.relay_target import RelayUnavailable, relay_target
from gcpcall.reconcile.status_writer import Contribute, Written
from gcpcall.reconcile.task_events import post_transitions
from gcpcall.reconcile.task_poller import Watched

__all__ = [
    "KIND",
    "PLURAL",
    "delete_gcp_task",
    "follow_created",
    "reconcile_gcp_task",
    "resume_gcp_task",
]

log = logging.getLogger(__name__)

KIND, PLURAL = "GcpTask", "gcptasks"


def _ttl(obj: ObjectView) -> int | None:
    raw = obj.spec.get("ttlSecondsAfterFinished")
    return raw if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0 else None


async def _write(
    obj: ObjectView, deps: Deps, reason: ReadyReason, message: str, *,
    created: bool = False, task: ObservedTask | None = None,
    queue_paused: bool = False, **fields: Any,
) -> Written | None:
    """Ready (and what was created), with the outcome owner's phase for that moment, in
    one write; events for its transitions."""
    parts: list[Part | Contribute] = [reconciler_part(
        ready_condition(reason, message), generation=obj.generation, **fields)]
    if created:
        parts.append(read_part(task))
    owner = Owner.RELAY if obj.relay else Owner.POLLER
    now = deps.clock.now()
    parts.append(lambda status: outcome_part(
        owner, status, now=now, created=created, exists=task is not None,
        attempt=task.last_attempt if task is not None and not obj.relay else None,
        queue_paused=queue_paused))
    deps.status.seen(obj.ref, obj.body or {})
    written = await deps.status.write(obj.ref, obj.relay, *parts)
    post_transitions(deps.events, obj.ref, written)
    return written


def _task_name(spec: GcpTaskSpec, obj: ObjectView, deps: Deps) -> str:
    return naming.task_name(spec.project, spec.location, spec.queue, deps.settings.cluster_name,
                            obj.ref.namespace, obj.ref.name, obj.ref.uid)


def _identity_status(spec: GcpTaskSpec, identity: GoogleIdentity) -> dict[str, str]:
    out: dict[str, str] = {}
    if spec.service_account_name:
        out["serviceAccountName"] = spec.service_account_name
    if identity.email:
        out["googleServiceAccount"] = identity.email
    return out


def _ready_reason_of(status: Mapping[str, Any]) -> str | None:
    ready = find_condition(status.get("conditions"), "Ready") or {}
    reason = ready.get("reason")
    return str(reason) if reason else None


def _is_created(status: Mapping[str, Any]) -> bool:
    return bool(status.get("taskName")) and _ready_reason_of(status) == ReadyReason.CREATED.value


def _watched(obj: ObjectView, deps: Deps, spec: GcpTaskSpec, name: str) -> Watched:
    return Watched(
        ref=obj.ref, service_account=spec.service_account_name,
        group=(identity_key(obj.ref.namespace, spec.service_account_name, deps.settings),
               spec.queue_name),
        task_name=name, relay=obj.relay, ttl_seconds=spec.ttl_seconds_after_finished,
    )


async def reconcile_gcp_task(
    obj: ObjectView, deps: Deps, *, queue_seen: bool = False
) -> Outcome:
    """Create the task once; report it. Returns when to try again, if at all.

    `queue_seen`: the queue this object was waiting for was just found.
    """
    deps.status.seen(obj.ref, obj.body or {})
    status = deps.status.known(obj.ref, obj.status)
    if status.get("phase") in TERMINAL_PHASES:
        deps.poller.finished(obj.ref, _ttl(obj), status)
        return Outcome.done()  # finished tasks cost nothing
    if _is_created(status) and deps.poller.watching(obj.ref):
        return Outcome.done()  # a metadata edit: the poller already follows the task

    try:
        spec = parse_gcp_task(obj.spec, await defaults_for(obj, deps.settings, deps.namespaces))
        relay = relay_target(spec.delivery, deps.settings, obj.ref)
    except InvalidSpec as e:
        return await _invalid(obj, deps, e)
    except RelayUnavailable as e:
        if await _write(obj, deps, ReadyReason.RELAY_NOT_CONFIGURED, str(e)) is not None:
            deps.events.warning(obj.ref, "RelayNotConfigured", str(e))
        return Outcome.done()
    if _is_created(status):
        # Created before a restart: the poller takes it from here, no Google call now.
        deps.poller.watch(_watched(obj, deps, spec, str(status["taskName"])), soon=True)
        return Outcome.done()
    if not queue_seen and _ready_reason_of(status) == ReadyReason.QUEUE_NOT_FOUND.value:
        # Still waiting for its queue (say, after a restart): a GetQueue decides, not a
        # CreateTask per object.
        _wait_for_queue(obj, deps, spec)
        return Outcome.done()

    try:
        identity = await deps.identities.resolve(obj.ref.namespace, spec.service_account_name)
    except IdentityNotReady as e:
        await _write(obj, deps, ReadyReason.IDENTITY_NOT_READY, str(e))
        return Outcome.retry_slow("IdentityNotReady")

    try:
        body = None if relay is not None else await resolve_body(
            spec.target, obj.ref.namespace, deps.kube)
        desired = desired_task(spec, _task_name(spec, obj, deps), identity.email,
                               obj.created or deps.clock.now(), body=body, relay=relay)
    except InvalidSpec as e:
        return await _invalid(obj, deps, e)
    except BodySourceMissing as e:
        message = f"{e.field}: {e.message}"
        reason = ReadyReason.PERMISSION_DENIED if e.forbidden else ReadyReason.BODY_SOURCE_NOT_FOUND
        if await _write(obj, deps, reason, message) is not None:
            deps.events.warning(obj.ref, reason.value, message)
        return Outcome(0.0, reason.value)  # it may appear (or be granted) at any time

    try:
        # The finalizer goes on in parallel with the create and the status that reports it.
        task, fresh, written = await holding_finalizer(
            obj, deps.kube, _create_and_report(obj, deps, spec, desired, identity))
    except ObjectGone:
        # Deleted while the task was being created, so no deletion will come for it here.
        if spec.deletion_policy is not DeletionPolicy.ABANDON:
            await _delete_orphan(deps, desired.name, identity)
        return Outcome.done()
    except _CreateFailed as e:
        return await _create_failed(obj, deps, spec, e.cause)
    if fresh:
        deps.events.normal(obj.ref, "Created", f"created Cloud Task {desired.name}")
    else:
        state = "found" if task is not None else "found that it already ran:"
        deps.events.normal(obj.ref, "Created", f"{state} Cloud Task {desired.name} "
                                               "(created before a restart)")
    after = written.after if written is not None else deps.status.known(obj.ref)
    if after.get("phase") in TERMINAL_PHASES:
        deps.poller.finished(obj.ref, spec.ttl_seconds_after_finished, after)
    else:
        deps.poller.watch(_watched(obj, deps, spec, desired.name), observed=task)
    return Outcome.done()


class _CreateFailed(Exception):
    """CreateTask (or the GET after ALREADY_EXISTS) failed: report it once the finalizer
    patch running beside it is done."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


async def _create_and_report(
    obj: ObjectView, deps: Deps, spec: GcpTaskSpec, desired: Any, identity: GoogleIdentity
) -> tuple[ObservedTask | None, bool, Written | None]:
    """Create the task once, then write the status that says so: (task, fresh, written)."""
    try:
        task, fresh = await reporting_if_slow(
            _create_once(deps, desired, identity),
            lambda: _write(obj, deps, ReadyReason.CREATING,
                           f"creating Cloud Task {desired.name}"))
    except Exception as exc:  # every Google error ends up in status, classified once
        raise _CreateFailed(exc) from exc
    queue = await deps.queues.get(spec.queue_name, identity)
    message = f"the task exists in Cloud Tasks queue {spec.queue_name}"
    written = await _write(
        obj, deps, ReadyReason.CREATED, message, created=True, task=task,
        queue_paused=bool(queue and queue.paused),
        task_name=desired.name, identity=_identity_status(spec, identity),
    )
    return task, fresh, written


async def _create_once(
    deps: Deps, desired: Any, identity: GoogleIdentity
) -> tuple[ObservedTask | None, bool]:
    """(task, created now). ALREADY_EXISTS: created before, so GET it; None: it already
    ran and Cloud Tasks deleted it."""
    try:
        return await deps.tasks.create_task(desired, identity), True
    except Exception as exc:
        if classify(exc).reason != "AlreadyExists":
            raise
    return await deps.tasks.get_task(desired.name, identity), False


async def _delete_orphan(deps: Deps, name: str, identity: GoogleIdentity) -> None:
    try:
        await deps.tasks.delete_task(name, identity)
    except Exception as exc:
        log.warning("task %s outlived its deleted object and could not be deleted: %s",
                    name, classify(exc).message)


async def _invalid(obj: ObjectView, deps: Deps, e: InvalidSpec) -> Outcome:
    message = f"{e.field}: {e.message}"
    if await _write(obj, deps, ReadyReason.INVALID_SPEC, message) is not None:
        deps.events.warning(obj.ref, "InvalidSpec", message)
    return Outcome.done()  # the spec is immutable: nothing to retry


def _wait_for_queue(obj: ObjectView, deps: Deps, spec: GcpTaskSpec) -> None:
    async def retry() -> None:
        await reconcile_gcp_task(obj, deps, queue_seen=True)

    deps.poller.forget(obj.ref.uid)
    deps.queue_waits.wait(obj.ref.uid, spec.queue_name, obj.ref.namespace,
                          spec.service_account_name, retry)


async def _create_failed(
    obj: ObjectView, deps: Deps, spec: GcpTaskSpec, exc: Exception
) -> Outcome:
    c = classify(exc)
    if c.reason == "NotFound":
        # Cloud Tasks answers CreateTask in a missing queue with FAILED_PRECONDITION.
        message = (f"queue {spec.queue_name} does not exist ({c.message}); the task is "
                   "created as soon as it does")
        if await _write(obj, deps, ReadyReason.QUEUE_NOT_FOUND, message) is not None:
            deps.events.warning(obj.ref, "QueueNotFound", message)
        _wait_for_queue(obj, deps, spec)
        return Outcome.done()
    if c.reason == "Unexpected":
        log.exception("reconcile failed", exc_info=exc, extra={"object": obj.ref})
    if await _write(obj, deps, ready_reason(c.reason), c.message) is not None:
        deps.events.warning(obj.ref, "Failed", c.message)
    return Outcome.retry(c, deps.tasks.recovery) if c.retryable else Outcome.done()


async def resume_gcp_task(obj: ObjectView, deps: Deps) -> Outcome:
    """After an operator restart: no Google write, and reads only for unfinished tasks
    (batched by the poller into ListTasks per queue when many are due)."""
    if await follow_created(obj, deps):
        return Outcome.done()
    return await reconcile_gcp_task(obj, deps)


async def follow_created(obj: ObjectView, deps: Deps) -> bool:
    """An object listed after a restart whose task was created (or has finished) needs no
    reconcile: the poller follows the task (or the TTL the finished object). False: it
    needs a reconcile (nothing was registered)."""
    if deps.poller.watching(obj.ref):
        return True
    deps.status.seen(obj.ref, obj.body or {})
    status = deps.status.known(obj.ref, obj.status)
    if status.get("phase") in TERMINAL_PHASES:
        deps.poller.finished(obj.ref, _ttl(obj), status)
        return True
    if not _is_created(status):
        return False
    try:
        spec = parse_gcp_task(obj.spec, await defaults_for(obj, deps.settings, deps.namespaces))
        relay_target(spec.delivery, deps.settings, obj.ref)
    except (InvalidSpec, RelayUnavailable):
        return False
    deps.poller.watch(_watched(obj, deps, spec, str(status["taskName"])), soon=True)
    return True


async def delete_gcp_task(obj: ObjectView, deps: Deps) -> Outcome:
    """Delete: a task that has not finished is deleted with the object (`Delete`) or left
    to run (`Abandon`); a finished one needs no call at all."""
    deps.poller.forget(obj.ref.uid)
    deps.queue_waits.forget(obj.ref.uid)
    status = deps.status.known(obj.ref, obj.status)
    if status.get("phase") in TERMINAL_PHASES:
        deps.status.forget(obj.ref)
        return Outcome.done()
    if obj.spec.get("deletionPolicy") == DeletionPolicy.ABANDON.value:
        if status.get("taskName"):
            deps.events.normal(obj.ref, "Abandoned",
                               f"kept Cloud Task {status['taskName']} to run")
        deps.status.forget(obj.ref)
        return Outcome.done()
    never_created = not status.get("taskName") and _ready_reason_of(status) in (
        ReadyReason.INVALID_SPEC.value, ReadyReason.IDENTITY_NOT_READY.value,
        ReadyReason.BODY_SOURCE_NOT_FOUND.value)
    try:
        spec: GcpTaskSpec | None = parse_gcp_task(
            obj.spec, await defaults_for(obj, deps.settings, deps.namespaces))
    except InvalidSpec:
        spec = None
    name = status.get("taskName") or (spec and _task_name(spec, obj, deps))
    if never_created or not name:
        deps.status.forget(obj.ref)
        return Outcome.done()
    # The name is known even when a crash hid the create from status: it derives from uid.
    ksa = spec.service_account_name if spec else (
        obj.spec.get("serviceAccountName") or deps.settings.default_service_account)
    try:
        identity = await deps.identities.resolve(obj.ref.namespace, ksa)
        deleted = await deps.tasks.delete_task(str(name), identity)
    except Exception as exc:
        reason, message = deletion_failure(exc)
        deps.status.seen(obj.ref, obj.body or {})
        written = await deps.status.write(obj.ref, obj.relay, reconciler_part(
            ready_condition(reason, message), generation=obj.generation))
        if written is not None:
            deps.events.warning(obj.ref, reason.value, message)
        return Outcome.retry_deletion(reason.value)
    if deleted:
        deps.events.normal(obj.ref, "Deleted", f"deleted Cloud Task {name}")
    deps.status.forget(obj.ref)
    return Outcome.done()
