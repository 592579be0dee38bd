"""The batched status sync of ScheduledGcpCalls: one ListJobs per group, when it matters.

Why not a timer per object: Cloud Scheduler keeps each job's last attempt (time and code)
and its next run time; reading them per object every minute would cost about one call per
object a minute. Instead objects are grouped by (identity, project, location), and a group
is listed (a) shortly after the earliest of its members' runs falls due, so a run's result
shows within seconds (P7), and (b) otherwise on a slow drift-check cadence, so idle objects
cost almost nothing (P3). Each list fans out to the members whose observed fields changed.
A member whose job was edited or deleted outside the operator is put back by the one job
converge (`reconcile.converge`); when that fails, Ready says so, naming the fields.
A body kept in a ConfigMap or Secret is read again on the drift-check cadence, so an edit
of it reaches the job without watching Secrets.
"""

from __future__ import annotations

import datetime
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from gcpcall.api.ownership import Owner, Part
from gcpcall.api.status import (
    ReadyReason,
    job_part,
    ready_condition,
    reconciler_part,
    recorded_runs,
    run_from_job,
    runs_part,
)
from gcpcall.clock import Clock
from gcpcall.config import Settings
from gcpcall.gcp.errors import classify
from gcpcall.gcp.identity import GoogleIdentity, IdentityNotReady, IdentityResolver
from gcpcall.gcp.scheduler import Job, SchedulerAdapter
from gcpcall.gcp.scheduler_mapping import observed_job, update_mask, with_body
from gcpcall.kube import KubeClient, ObjectRef
from gcpcall.observe.metrics import SYNC_DURATION, SYNC_LAST_LIST, SYNC_LISTS, TRACKED
from gcpcall.reconcile.converge import Cause, JobConverger, failure
from gcpcall.reconcile.inputs import BodySourceMissing, resolve_body
from gcpcall.reconcile.loop import BackgroundLoop
from gcpcall.reconcile.status_writer import StatusWriter
from gcpcall.reconcile.tracked import GroupKey, Tracked

__all__ = ["ScheduledSync"]

log = logging.getLogger(__name__)

_FOLLOW_UPS = (2.0, 4.0, 8.0, 16.0, 30.0)  # re-lists while a due run has not shown yet
_RETRY_FAST = 15.0
_RUN_WAIT = 120.0  # how long a requested run is looked for (a paused job never runs it)
_GATHER = 2.0  # after a restart, wait this long for more resumed members before listing
_SHARE = 120.0  # how long a restart's list answers for members resumed after it
_RETRY_SLOW = 300.0


@dataclass
class _Group:
    key: GroupKey
    members: dict[str, Tracked] = field(default_factory=dict)  # by job name
    last_list: float = 0.0
    last_drift_check: float = 0.0
    list_at: float = 0.0  # monotonic time of the next list
    soon: bool = False  # list soon (after a restart: drift and missed runs)
    soon_at: float = float("inf")
    extra_at: float = float("inf")  # a list asked for (a run was requested)
    follow_up: int = 0
    # The last list, kept a while after a restart's list: objects resumed after it are
    # checked against it instead of listing the group again for each trickle of them.
    listed: dict[str, Job] | None = None
    listed_until: float = 0.0
    late: set[str] = field(default_factory=set)  # job names to check against `listed`
    # The earliest due run after `last_list` (+ settle), or None: work it out again. Kept
    # so that tracking one more member is O(1), not O(members) (a restart tracks 10,000);
    # after a member's run moves later it can be early, never late: an early list is
    # harmless (it finds nothing due and the value is worked out again).
    due_at: float | None = None
    listing: bool = False  # a restart's list is out: members resumed meanwhile wait for it


class ScheduledSync(BackgroundLoop):
    """Keeps the registry of synced objects and runs the list-and-fan-out loop."""

    name = "sync"

    def __init__(
        self, settings: Settings, scheduler: SchedulerAdapter, identities: IdentityResolver,
        status: StatusWriter, converger: JobConverger, kube: KubeClient, clock: Clock,
    ) -> None:
        super().__init__(clock)
        self.settings = settings
        self.scheduler = scheduler
        self.identities = identities
        self.status = status
        self.converger = converger
        self.kube = kube
        self._groups: dict[GroupKey, _Group] = {}
        self._where: dict[str, GroupKey] = {}  # uid -> group

    # registry -------------------------------------------------------------------------
    def tracked(self) -> int:
        return len(self._where)

    def tracking(self, uid: str) -> bool:
        return uid in self._where

    def track(self, t: Tracked, list_soon: bool = False) -> None:
        old = self._where.get(t.ref.uid)
        if old is not None:
            self.untrack(t.ref)
        group = self._groups.get(t.group)
        if group is None:
            now = self.clock.monotonic()
            group = _Group(t.group, last_list=now, last_drift_check=now)
            self._groups[t.group] = group
        group.members[t.job_name] = t
        self._where[t.ref.uid] = t.group
        self._note_due(group, t)
        if list_soon:
            now = self.clock.monotonic()
            if group.listing or (group.listed is not None and now < group.listed_until):
                group.late.add(t.job_name)  # checked against the restart's list
            elif not group.soon:
                group.soon, group.soon_at = True, now + _GATHER
        self._reschedule(group)
        TRACKED.labels(self.name).set(len(self._where))
        self.wake()

    def untrack(self, ref: ObjectRef) -> None:
        key = self._where.pop(ref.uid, None)
        TRACKED.labels(self.name).set(len(self._where))
        group = self._groups.get(key) if key is not None else None
        if group is None:
            return
        for name, member in list(group.members.items()):
            if member.ref.uid == ref.uid:
                del group.members[name]
        group.due_at = None
        if not group.members:
            del self._groups[group.key]

    def expect_run(self, ref: ObjectRef) -> None:
        """A run was just requested: list its group once the attempt had time to finish."""
        key = self._where.get(ref.uid)
        group = self._groups.get(key) if key is not None else None
        if group is None:
            return
        for member in group.members.values():
            if member.ref.uid == ref.uid:
                member.run_requested = self.clock.now()
        group.extra_at = self.clock.monotonic() + self.settings.run_settle_seconds
        self._reschedule(group)
        self.wake()

    def _monotonic_at(self, when: datetime.datetime) -> float:
        return self.clock.monotonic() + (when - self.clock.now()).total_seconds()

    def _due(self, m: Tracked, group: _Group) -> float | None:
        """When the group should list for `m`'s next run; None: nothing due after the last
        list (runs that fell due before it are the follow-ups' business)."""
        if m.next_run is None or m.paused:
            return None
        at = self._monotonic_at(m.next_run) + self.settings.run_settle_seconds
        return at if at > group.last_list else None

    def _note_due(self, group: _Group, m: Tracked) -> None:
        if group.due_at is not None and (at := self._due(m, group)) is not None:
            group.due_at = min(group.due_at, at)

    def _reschedule(self, group: _Group) -> None:
        """Next list = earliest due run (+ settle) or the drift check, whichever is first."""
        if group.due_at is None:
            due = (self._due(m, group) for m in group.members.values())
            group.due_at = min((t for t in due if t is not None), default=float("inf"))
        drift_at = group.last_drift_check + self.settings.drift_check_seconds
        candidates = [drift_at, group.due_at]
        if group.follow_up:
            candidates.append(group.last_list + _FOLLOW_UPS[group.follow_up - 1])
        if group.soon:
            candidates.append(group.soon_at)
        if group.late and group.listed is not None:
            candidates.append(self.clock.monotonic())
        candidates.append(group.extra_at)
        group.list_at = min(candidates)

    # loop -------------------------------------------------------------------------------
    async def step(self) -> float:
        now = self.clock.monotonic()
        for group in [g for g in self._groups.values() if g.list_at <= now]:
            if self._groups.get(group.key) is not group:
                continue  # emptied meanwhile
            try:
                if group.late and group.listed is not None and now < group.listed_until:
                    await self._sync_late(group)  # no List: they share the restart's
                    if group.list_at > now:
                        continue
                await self.sync_group(group)
            except Exception:
                log.exception("sync of group %s failed", group.key[1:])
                self._failed(group, 30.0)
        return min((g.list_at for g in self._groups.values()), default=float("inf"))

    async def sync_group(self, group: _Group) -> None:
        """List the group's jobs once and bring every member's status up to date."""
        any_member = next(iter(group.members.values()))
        _, project, location = group.key
        started = self.clock.monotonic()
        restart_list = group.soon
        group.soon, group.soon_at = False, float("inf")
        group.extra_at = float("inf")
        group.late.clear()  # this list covers them
        group.listing = restart_list
        drift_check = started >= group.last_drift_check + 0.9 * self.settings.drift_check_seconds
        try:
            identity = await self.identities.resolve(
                any_member.ref.namespace, any_member.service_account
            )
            jobs = await self.scheduler.list_jobs(
                f"projects/{project}/locations/{location}", identity
            )
        except IdentityNotReady:
            self._failed(group, _RETRY_SLOW)
            return
        except Exception as exc:
            c = classify(exc)
            if c.code == "UNAUTHENTICATED":  # a stale token: the next list gets a new one
                self.identities.invalidate(any_member.ref.namespace,
                                           any_member.service_account or "")
            log.warning("ListJobs for %s/%s failed: %s", project, location, c.message)
            self._failed(group, _RETRY_SLOW if c.backoff == "slow" else _RETRY_FAST)
            return
        finally:
            group.listing = False
            SYNC_LISTS.labels("ScheduledGcpCall").inc()
        SYNC_LAST_LIST.labels("ScheduledGcpCall").set(time.time())
        by_name = {job.name: job for job in jobs}
        if restart_list:
            group.listed, group.listed_until = by_name, self.clock.monotonic() + _SHARE
        elif group.listed is not None and self.clock.monotonic() >= group.listed_until:
            group.listed = None
        waiting = False
        for member in list(group.members.values()):
            if self._where.get(member.ref.uid) != group.key:
                continue  # untracked while the list was out
            group.late.discard(member.job_name)  # resumed while it was out: covered here
            if drift_check and member.spec is not None:
                await self._refresh_body(member)
            waiting |= await self._sync_member(member, by_name.get(member.job_name), identity)
        group.last_list = self.clock.monotonic()
        group.due_at = None
        if drift_check:
            group.last_drift_check = group.last_list
        group.follow_up = min(group.follow_up + 1, len(_FOLLOW_UPS)) if waiting else 0
        self._reschedule(group)
        SYNC_DURATION.labels("ScheduledGcpCall").observe(self.clock.monotonic() - started)

    async def _sync_late(self, group: _Group) -> None:
        """Members resumed after the group's restart list: checked against that list."""
        assert group.listed is not None
        late, group.late = group.late, set()
        members = [m for name in late if (m := group.members.get(name)) is not None]
        if not members:
            self._reschedule(group)
            return
        try:
            identity = await self.identities.resolve(members[0].ref.namespace,
                                                     members[0].service_account)
        except IdentityNotReady:
            self._reschedule(group)
            return
        for member in members:
            job = group.listed.get(member.job_name)
            if job is None:  # made after that list, or deleted since: a new list decides
                group.extra_at = min(group.extra_at, self.clock.monotonic())
                continue
            await self._sync_member(member, job, identity)
            self._note_due(group, member)
        self._reschedule(group)

    def _failed(self, group: _Group, retry_in: float) -> None:
        group.last_list = self.clock.monotonic()
        group.due_at = None
        group.list_at = group.last_list + retry_in

    async def _refresh_body(self, m: Tracked) -> None:
        """Read a ConfigMap/Secret body again: an edit of it changes the desired job."""
        assert m.spec is not None
        try:
            body = await resolve_body(m.spec.target, m.ref.namespace, self.kube)
        except BodySourceMissing:
            return  # the converge below keeps the job; the reconcile reports a missing one
        except Exception as exc:
            log.warning("reading the referenced body failed: %s", classify(exc).message,
                        extra={"object": m.ref})
            return
        if body is not None:
            m.desired = with_body(m.desired, body)

    async def _sync_member(self, m: Tracked, job: Job | None,
                           identity: GoogleIdentity) -> bool:
        """Update one member from its listed job; True while a due run has not shown yet."""
        parts: list[Part] = []
        newer_spec = (self.status.generation(m.ref) or 0) > m.generation
        desired = m.desired  # parsed from its wire form once for this member
        drifted = job is None or bool(update_mask(desired, job)) or _state_differs(job, m)
        if not newer_spec:
            # A spec edit is on its way through the reconcile: this member's desired job
            # is stale, so neither put it back nor report on it until then.
            ready_reason = ReadyReason.PAUSED if m.paused else ReadyReason.UP_TO_DATE
            ready_message = ("the job is paused" if m.paused
                             else "the Cloud Scheduler job matches the spec")
            if drifted:
                try:
                    job = await self.converger.converge(m.ref, desired, m.paused, identity,
                                                        actual=job, cause=Cause.DRIFT)
                except Exception as exc:
                    f = failure(exc)
                    ready_reason, ready_message = f.reason, f.message
                    log.warning("drift not corrected: %s", f.message,
                                extra={"object": m.ref, "google": m.job_name})
            parts.append(reconciler_part(ready_condition(ready_reason, ready_message)))
        if job is None:
            await self._write(m, parts)
            return False

        observed = observed_job(job)
        now = self.clock.now()
        was_due = m.next_run is not None and m.next_run <= now
        parts.append(job_part(observed))
        run = run_from_job(observed, target_host=m.target_host,
                           schedule_time=m.next_run if was_due else None)
        await self._write(m, parts, None if m.relay else run)
        # The run that fell due (or was requested) has not been attempted yet: look again.
        waiting = was_due and not m.paused and (
            observed.next_run_time is None or observed.next_run_time == m.next_run
        )
        if m.run_requested is not None:
            attempted = observed.last_attempt_time
            given_up = (now - m.run_requested).total_seconds() > _RUN_WAIT
            if given_up or (attempted is not None
                            and attempted >= m.run_requested.replace(microsecond=0)):
                m.run_requested = None
            else:
                waiting = True
        m.next_run = observed.next_run_time
        return waiting

    async def _write(self, m: Tracked, parts: list[Part], run: Any = None) -> None:
        def runs(status: Any) -> Part:
            record = run
            if record is not None:
                seen = next((r for r in recorded_runs(status)
                             if r.get("attemptTime") == record.to_status()["attemptTime"]), None)
                if seen is not None and seen.get("code") == record.code:
                    record = None  # already recorded; keep the entry as first written
            return runs_part(Owner.SYNC, status, record, m.history_limit)

        try:
            await self.status.write(m.ref, m.relay, *parts, *(() if m.relay else (runs,)))
        except Exception as exc:
            log.warning("status not written: %s", classify(exc).message,
                        extra={"object": m.ref})


def _state_differs(job: Job, m: Tracked) -> bool:
    state = observed_job(job).state
    return (m.paused and state == "ENABLED") or (not m.paused and state == "PAUSED")
