"""The one job converge: make the Cloud Scheduler job what the spec says, and say how.

Why one: a job is brought back to its spec from two places, the reconcile of a changed
object and the sync's drift check (someone edited or deleted the job in the console). Both
create (or adopt) a missing job, `UpdateJob` only the differing fields, and pause or resume
it; both must then report the same way. When the job cannot be brought back, the failure
names the fields that differ, and Ready says so (`failure`), whichever path found it.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from gcpcall.api import naming
from gcpcall.api.status import ReadyReason
from gcpcall.gcp.errors import Classification, classify
from gcpcall.gcp.identity import GoogleIdentity
from gcpcall.gcp.scheduler import Job, SchedulerAdapter
from gcpcall.gcp.scheduler_mapping import update_mask
from gcpcall.kube import ObjectRef
from gcpcall.observe.events import EventRecorder
from gcpcall.reconcile.objects import ready_reason

__all__ = [
    "UNKNOWN",
    "AdoptionRefused",
    "Cause",
    "ConvergeFailed",
    "Failure",
    "JobConverger",
    "failure",
]


class Cause(enum.Enum):
    SPEC = "spec"  # the object changed (or is new): Created, Updated, Paused, Resumed
    DRIFT = "drift"  # the sync found the job changed outside the operator: DriftCorrected


class _Unknown(enum.Enum):
    UNKNOWN = "unknown"


UNKNOWN = _Unknown.UNKNOWN  # "not read yet": the converge reads (or creates) itself


class AdoptionRefused(Exception):
    """The job exists but its description marker names another object."""

    def __init__(self, job_name: str, owner: str) -> None:
        super().__init__(
            f"job {job_name} is managed by {owner}, not by this object; "
            "rename this object or delete that job"
        )


class ConvergeFailed(Exception):
    """A Google call of the converge failed; `fields` differ from the spec meanwhile."""

    def __init__(self, cause: Exception, fields: Sequence[str]) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.fields = tuple(fields)


@dataclass(frozen=True)
class Failure:
    reason: ReadyReason
    message: str
    classification: Classification


def failure(exc: BaseException) -> Failure:
    """How a failed converge reads in Ready: the classified reason, and the fields that
    still differ (for a drift that could not be put back)."""
    fields: tuple[str, ...] = ()
    if isinstance(exc, ConvergeFailed):
        fields, exc = exc.fields, exc.cause
    c = classify(exc)
    message = c.message
    if fields:
        message = (f"the Cloud Scheduler job differs from the spec in {', '.join(fields)} "
                   f"and could not be put back: {c.message}")
    return Failure(ready_reason(c.reason), message, c)


class JobConverger:
    """Create/adopt, update and pause/resume one job; post the events that tell users."""

    def __init__(self, scheduler: SchedulerAdapter, events: EventRecorder,
                 cluster_name: str) -> None:
        self.scheduler = scheduler
        self.events = events
        self.cluster_name = cluster_name

    async def converge(
        self, ref: ObjectRef, desired: Job, paused: bool, identity: GoogleIdentity, *,
        actual: Job | _Unknown | None = UNKNOWN, known: bool = False, cause: Cause = Cause.SPEC,
    ) -> Job:
        """The job as it is once it matches `desired` (and `paused`).

        `actual`: the job as just listed (None: it does not exist), or UNKNOWN. Then a new
        object (`known` False) most likely has no job yet, so it creates first and looks
        only if the job exists (adoption); an object synced before is read first.
        """
        if actual is UNKNOWN:
            actual = await self.scheduler.get_job(desired.name, identity) if known else None
            if actual is None and not known:
                created = await self._create(ref, desired, identity, cause, or_none=True)
                if created is not None:
                    return await self._state(ref, created, paused, identity, cause)
                actual = await self.scheduler.get_job(desired.name, identity)
                if actual is None:  # deleted between our create and get: try again soon
                    raise RuntimeError(f"{desired.name} exists and vanished; retrying")
        if actual is None:
            job = await self._create(ref, desired, identity, cause, or_none=False)
            assert job is not None
        else:
            job = await self._adopt_or_update(ref, desired, actual, identity, cause)
        return await self._state(ref, job, paused, identity, cause)

    async def _create(self, ref: ObjectRef, desired: Job, identity: GoogleIdentity,
                      cause: Cause, *, or_none: bool) -> Job | None:
        parent = desired.name.rsplit("/jobs/", 1)[0]
        if cause is Cause.DRIFT:
            self.events.warning(ref, "JobMissing", f"{desired.name} no longer exists in "
                                                   "Cloud Scheduler; recreating")
        try:
            if or_none:
                job = await self.scheduler.create_job_or_none(parent, desired, identity)
            else:
                job = await self.scheduler.create_job(parent, desired, identity)
        except Exception as exc:
            raise ConvergeFailed(exc, ["the whole job (missing)"] if cause is Cause.DRIFT
                                 else []) from exc
        if job is not None:
            if cause is Cause.DRIFT:
                self.events.normal(ref, "DriftCorrected", f"recreated {desired.name}")
            else:
                self.events.normal(ref, "Created", f"created Cloud Scheduler job {job.name}")
        return job

    async def _adopt_or_update(self, ref: ObjectRef, desired: Job, actual: Job,
                               identity: GoogleIdentity, cause: Cause) -> Job:
        owner = naming.parse_marker(actual.description)
        mine = naming.ObjectKey(self.cluster_name, ref.namespace, ref.name)
        if owner is not None and owner != mine:
            raise AdoptionRefused(actual.name, f"{owner.cluster}/{owner.namespace}/{owner.name}")
        mask = update_mask(desired, actual)
        if not mask:
            return actual
        try:
            updated = await self.scheduler.update_job(desired, mask, identity)
        except Exception as exc:
            raise ConvergeFailed(exc, mask if cause is Cause.DRIFT else []) from exc
        if cause is Cause.DRIFT:
            self.events.normal(ref, "DriftCorrected", "the job was changed outside the "
                                                      f"operator; restored {', '.join(mask)}")
        else:
            verb = "adopted and updated" if owner is None else "updated"
            self.events.normal(ref, "Updated", f"{verb} {', '.join(mask)}")
        return updated

    async def _state(self, ref: ObjectRef, job: Job, paused: bool, identity: GoogleIdentity,
                     cause: Cause) -> Job:
        try:
            job, action = await self.scheduler.ensure_state(job, paused, identity)
        except Exception as exc:
            raise ConvergeFailed(exc, ["state"] if cause is Cause.DRIFT else []) from exc
        if action and cause is Cause.DRIFT:
            self.events.normal(ref, "DriftCorrected", f"{action.lower()} the job again")
        elif action:
            self.events.normal(ref, action, f"{action.lower()} the Cloud Scheduler job")
        return job

