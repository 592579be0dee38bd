"""The batched status sync of ScheduledGcpCalls: one ListJobs per group, when it matters.

Why not a timer per object: Cloud Scheduler keeps each job's last attempt (time and code)
and its next run time; reading them per object every minute would cost about one call per
object a minute. Instead objects are grouped by (identity, project, location), and a group
is listed (a) shortly after the earliest of its members' runs falls due, so a run's result
shows within seconds (P7), and (b) otherwise on a slow drift-check cadence, so idle objects
cost almost nothing (P3). Each list fans out to the members whose observed fields changed;
a member whose job was edited outside the operator gets an `UpdateJob` back to the spec.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gcpcall.api.scheduled_call import ScheduledCallSpec
from gcpcall.api.status import desired_call_status, run_from_job
from gcpcall.gcp.errors import classify
from gcpcall.gcp.identity import IdentityNotReady
from gcpcall.gcp.scheduler import Job
from gcpcall.gcp.scheduler_mapping import observed_job, update_mask
from gcpcall.kube import ObjectRef
from gcpcall.observe.metrics import SYNC_DURATION, SYNC_LISTS

if TYPE_CHECKING:
    from gcpcall.reconcile.deps import Deps

__all__ = ["ScheduledSync", "Tracked"]

log = logging.getLogger(__name__)

GroupKey = tuple[Hashable, str, str]  # (identity key, project, location)
_FOLLOW_UPS = (2.0, 4.0, 8.0, 16.0, 30.0)  # re-lists while a due run has not shown yet


@dataclass
class Tracked:
    """What the sync needs to know about one synced object."""

    ref: ObjectRef
    namespace: str
    service_account: str | None
    group: GroupKey
    job_name: str
    desired: Job
    paused: bool
    history_limit: int
    generation: int
    next_run: datetime.datetime | None
    target_host: str = ""

    @classmethod
    def from_reconcile(
        cls, ref: ObjectRef, spec: ScheduledCallSpec, identity_key: Hashable,
        job: Job, desired: Job, generation: int,
    ) -> Tracked:
        observed = observed_job(job)
        return cls(
            ref=ref,
            namespace=ref.namespace,
            service_account=spec.service_account_name,
            group=(identity_key, spec.project, spec.location),
            job_name=job.name,
            desired=desired,
            paused=spec.paused,
            history_limit=spec.history_limit,
            generation=generation,
            next_run=observed.next_run_time,
            target_host=spec.target.host,
        )


@dataclass
class _Group:
    key: GroupKey
    members: dict[str, Tracked] = field(default_factory=dict)  # by job name
    last_list: float = 0.0
    list_at: float = 0.0  # monotonic time of the next list
    soon: bool = False  # list at once (after a restart: drift and missed runs)
    extra_at: float = float("inf")  # a list asked for (a run was requested)
    follow_up: int = 0


class ScheduledSync:
    """Keeps the registry of synced objects and runs the list-and-fan-out loop."""

    def __init__(self, deps: Deps, clock: Callable[[], float] = time.monotonic) -> None:
        self.deps = deps
        self.clock = clock
        self._groups: dict[GroupKey, _Group] = {}
        self._where: dict[str, GroupKey] = {}  # uid -> group
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # registry -------------------------------------------------------------------------
    def track(self, t: Tracked, list_soon: bool = False) -> None:
        old = self._where.get(t.ref.uid)
        if old is not None and old != t.group:
            self.untrack(t.ref)
        group = self._groups.get(t.group)
        if group is None:
            group = _Group(t.group)
            group.last_list = self.clock()
            self._groups[t.group] = group
        group.members[t.job_name] = t
        self._where[t.ref.uid] = t.group
        group.soon |= list_soon
        self._reschedule(group)
        self._wakeup.set()

    def untrack(self, ref: ObjectRef) -> None:
        key = self._where.pop(ref.uid, None)
        if key is None:
            return
        group = self._groups.get(key)
        if group is None:
            return
        for name, member in list(group.members.items()):
            if member.ref.uid == ref.uid:
                del group.members[name]
        if not group.members:
            del self._groups[key]

    def expect_run(self, ref: ObjectRef) -> None:
        """A run was just requested: list its group once the attempt had time to finish."""
        key = self._where.get(ref.uid)
        group = self._groups.get(key) if key is not None else None
        if group is None:
            return
        group.extra_at = self.clock() + self.deps.settings.run_settle_seconds
        group.follow_up = max(group.follow_up, 1)
        self._reschedule(group)
        self._wakeup.set()

    def _monotonic_at(self, when: datetime.datetime) -> float:
        delta = (when - datetime.datetime.now(datetime.UTC)).total_seconds()
        return self.clock() + delta

    def _reschedule(self, group: _Group) -> None:
        """Next list = earliest due run (+ settle) or the drift check, whichever is first."""
        settings = self.deps.settings
        drift_at = group.last_list + settings.drift_check_seconds
        due = [
            self._monotonic_at(m.next_run) + settings.run_settle_seconds
            for m in group.members.values()
            if m.next_run is not None and not m.paused
        ]
        # runs that fell due before the last list are the follow-ups' business
        candidates = [drift_at, *(t for t in due if t > group.last_list)]
        if group.follow_up:
            candidates.append(group.last_list + _FOLLOW_UPS[group.follow_up - 1])
        if group.soon:
            candidates.append(self.clock())
        candidates.append(group.extra_at)
        group.list_at = min(candidates)

    # loop -------------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gcpcall-scheduled-sync")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            now = self.clock()
            due = [g for g in self._groups.values() if g.list_at <= now]
            for group in due:
                try:
                    await self.sync_group(group)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("sync of group %s failed", group.key[1:])
                    group.last_list = self.clock()
                    group.list_at = self.clock() + 30.0
            if due:
                continue
            next_at = min((g.list_at for g in self._groups.values()), default=now + 3600)
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=max(0.05, next_at - now))

    async def sync_group(self, group: _Group) -> None:
        """List the group's jobs once and bring every member's status up to date."""
        any_member = next(iter(group.members.values()))
        _, project, location = group.key
        started = self.clock()
        group.soon = False
        group.extra_at = float("inf")
        try:
            identity = await self.deps.identities.resolve(
                any_member.namespace, any_member.service_account
            )
            jobs = await self.deps.scheduler.list_jobs(
                f"projects/{project}/locations/{location}", identity
            )
        except IdentityNotReady:
            group.last_list = self.clock()
            group.list_at = self.clock() + 300.0
            return
        except Exception as exc:
            c = classify(exc)
            if c.code == "UNAUTHENTICATED":  # a stale token: the next list gets a new one
                self.deps.identities.invalidate(any_member.namespace,
                                                any_member.service_account or "")
            group.last_list = self.clock()
            group.list_at = self.clock() + (300.0 if c.backoff == "slow" else 15.0)
            log.warning("ListJobs for %s/%s failed: %s", project, location, c.message)
            return
        finally:
            SYNC_LISTS.labels("ScheduledGcpCall").inc()
        by_name = {job.name: job for job in jobs}
        waiting = False
        for member in list(group.members.values()):
            job = by_name.get(member.job_name)
            waiting |= await self._sync_member(member, job, identity)
        group.last_list = self.clock()
        group.follow_up = min(group.follow_up + 1, len(_FOLLOW_UPS)) if waiting else 0
        self._reschedule(group)
        SYNC_DURATION.labels("ScheduledGcpCall").observe(self.clock() - started)

    async def _sync_member(self, m: Tracked, job: Job | None, identity: Any) -> bool:
        """Update one member from its listed job; True while a due run has not shown yet."""
        deps = self.deps
        if job is None:
            # Deleted outside the operator: the next reconcile recreates it.
            deps.events.warning(
                m.ref, "JobMissing", f"{m.job_name} no longer exists in Cloud Scheduler; recreating"
            )
            try:
                created = await deps.scheduler.create_job(
                    m.job_name.rsplit("/jobs/", 1)[0], m.desired, identity
                )
            except Exception as exc:
                log.warning("recreating %s failed: %s", m.job_name, classify(exc).message)
                return False
            job = created
            deps.events.normal(m.ref, "DriftCorrected", f"recreated {m.job_name}")
        else:
            mask = update_mask(m.desired, job)
            try:
                if mask:
                    job = await deps.scheduler.update_job(m.desired, mask, identity)
                    deps.events.normal(
                        m.ref, "DriftCorrected",
                        f"the job was changed outside the operator; restored {', '.join(mask)}",
                    )
                job, action = await deps.scheduler.ensure_state(job, m.paused, identity)
                if action:
                    deps.events.normal(
                        m.ref, "DriftCorrected", f"{action.lower()} the job again"
                    )
            except Exception as exc:
                log.warning("drift correction of %s failed: %s", m.job_name, classify(exc).message)

        observed = observed_job(job)
        now = datetime.datetime.now(datetime.UTC)
        was_due = m.next_run is not None and m.next_run <= now
        current = deps.status.known(m.ref, None)
        run = run_from_job(observed, target_host=m.target_host,
                           schedule_time=m.next_run if was_due else None)
        if run is not None:
            seen = next((r for r in current.get("runs") or []
                         if r.get("attemptTime") == run.to_status()["attemptTime"]), None)
            if seen is not None and seen.get("code") == run.code:
                run = None  # already recorded; keep the entry as first written
        desired_status = desired_call_status(
            current, now=now, job=observed, run=run, history_limit=m.history_limit
        )
        await deps.status.write(m.ref, current, desired_status)
        # The run that fell due has not been attempted yet: look again soon.
        waiting = was_due and (
            observed.next_run_time is None or observed.next_run_time == m.next_run
        )
        m.next_run = observed.next_run_time
        return waiting and not m.paused

