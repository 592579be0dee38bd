"""What the batched sync keeps per ScheduledGcpCall (`Tracked`) and how members group.

Why a module of its own: the reconcile and the resume build these records and the sync
consumes them; keeping the record apart lets both sides import it without the sync loop.
"""

from __future__ import annotations

import datetime
from collections.abc import Hashable
from dataclasses import dataclass

from gcpcall.api.scheduled_call import ScheduledCallSpec
from gcpcall.gcp.scheduler import Job
from gcpcall.gcp.scheduler_mapping import observed_job
from gcpcall.kube import ObjectRef

__all__ = ["GroupKey", "Tracked"]

GroupKey = tuple[Hashable, str, str]  # (identity key, project, location)


@dataclass(slots=True)
class Tracked:
    """What the sync needs to know about one synced object.

    The desired job is kept serialized (`desired_pb`) and parsed when a list compares it:
    a parsed `Job` holds about 1.5 KB of the process's memory (most of it in protobuf's C
    arena, which tracemalloc does not see), its wire form about 0.3 KB, and the sync reads
    it once per drift period (bench/RESULTS.md, P4)."""

    ref: ObjectRef
    service_account: str | None
    group: GroupKey
    job_name: str
    desired_pb: bytes
    paused: bool
    history_limit: int
    generation: int
    next_run: datetime.datetime | None
    target_host: str = ""
    relay: bool = False  # Relay delivery: the relay records the runs, not the sync
    run_requested: datetime.datetime | None = None  # a RunJob whose attempt is not seen yet
    spec: ScheduledCallSpec | None = None  # kept only for a body in a ConfigMap/Secret

    @classmethod
    def of(
        cls, ref: ObjectRef, spec: ScheduledCallSpec, identity_key: Hashable, job: Job | None,
        desired: Job, generation: int, *, relay: bool,
        next_run: datetime.datetime | None = None,
    ) -> Tracked:
        """From a reconcile (`job` as it now is) or a resume (`next_run` from status)."""
        if job is not None:
            next_run = observed_job(job).next_run_time
        body = spec.target.body
        return cls(
            ref=ref, service_account=spec.service_account_name,
            group=(identity_key, spec.project, spec.location), job_name=desired.name,
            desired_pb=Job.serialize(desired), paused=spec.paused, history_limit=spec.history_limit,
            generation=generation, next_run=next_run, target_host=spec.target.host,
            relay=relay,
            spec=spec if body is not None and body.source is not None and not relay else None,
        )

    @property
    def desired(self) -> Job:
        """The job as it should be, parsed afresh: the caller may change it freely."""
        job: Job = Job.deserialize(self.desired_pb)
        return job

    @desired.setter
    def desired(self, job: Job) -> None:
        self.desired_pb = Job.serialize(job)
