"""In-memory stand-ins for the reconcile loops' collaborators, and a clock to move by hand.

Why: the sync's and the poller's timing (when to list, when to look again, backoff) is
logic, tested here without a server and without waiting. The stand-ins keep only what the
loops read back: the Kubernetes status subresource with resourceVersions (so the status
writer's conflict rule is exercised), Google jobs and tasks, and identities. The behaviour
against the real API server and the emulator is the integration suite's.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
from collections.abc import Mapping
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import scheduler_v1

from gcpcall.api.observed import ObservedQueue, ObservedTask
from gcpcall.gcp.identity import GoogleIdentity
from gcpcall.kube import KubeError, ObjectRef

T0 = datetime.datetime(2026, 11, 22, 9, 0, tzinfo=datetime.UTC)


class FakeClock:
    """Wall and monotonic time that move only when told to."""

    def __init__(self, start: datetime.datetime = T0) -> None:
        self.wall = start
        self.mono = 1000.0

    def now(self) -> datetime.datetime:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.wall += datetime.timedelta(seconds=seconds)
        self.mono += seconds


class FakeKube:
    """Objects' status subresources, with resourceVersions and the uid precondition."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}  # path -> object
        self.patches: list[tuple[str, dict[str, Any]]] = []
        self.deleted: list[str] = []
        self._rv = 0

    def add(self, ref: ObjectRef, status: Mapping[str, Any] | None = None,
            generation: int = 1) -> dict[str, Any]:
        self._rv += 1
        obj = {"metadata": {"uid": ref.uid, "name": ref.name, "namespace": ref.namespace,
                            "generation": generation, "resourceVersion": str(self._rv)},
               "status": dict(status or {})}
        self.objects[ref.path] = obj
        return copy.deepcopy(obj)

    def touch(self, ref: ObjectRef, **status: Any) -> None:
        """Someone else writes the status (another process)."""
        self._rv += 1
        obj = self.objects[ref.path]
        obj["status"].update(status)
        obj["metadata"]["resourceVersion"] = str(self._rv)

    async def get_object(self, ref: ObjectRef) -> dict[str, Any] | None:
        obj = self.objects.get(ref.path)
        return copy.deepcopy(obj) if obj is not None else None

    async def patch_status(self, ref: ObjectRef, status: Mapping[str, Any], *,
                           resource_version: str | None = None) -> dict[str, Any]:
        obj = self.objects.get(ref.path)
        if obj is None:
            raise KubeError(404, "NotFound", "gone")
        meta = obj["metadata"]
        if meta["uid"] != ref.uid or (resource_version and resource_version
                                      != meta["resourceVersion"]):
            raise KubeError(409, "Conflict", "the object has been modified")
        for key, value in status.items():
            if value is None:
                obj["status"].pop(key, None)
            elif isinstance(value, dict) and isinstance(obj["status"].get(key), dict):
                merged = {**obj["status"][key], **value}
                obj["status"][key] = {k: v for k, v in merged.items() if v is not None}
            else:
                obj["status"][key] = copy.deepcopy(value)
        self._rv += 1
        meta["resourceVersion"] = str(self._rv)
        self.patches.append((ref.name, dict(status)))
        return copy.deepcopy(obj)

    async def delete_object(self, ref: ObjectRef) -> bool:
        self.deleted.append(ref.name)
        return self.objects.pop(ref.path, None) is not None

    async def get_namespace(self, name: str) -> dict[str, Any]:
        return {"metadata": {"name": name}}


class FakeIdentities:
    def __init__(self) -> None:
        self.resolved = 0

    async def resolve(self, namespace: str, service_account: str | None,
                      **_: Any) -> GoogleIdentity:
        self.resolved += 1
        return GoogleIdentity("runner@p.iam.gserviceaccount.com", "token")

    def invalidate(self, namespace: str, service_account: str) -> None:
        pass


class FakeScheduler:
    """Jobs by name; `refuse` makes a method raise PERMISSION_DENIED; while `list_gate` is
    set and not open, a ListJobs waits for it (a list in flight)."""

    def __init__(self) -> None:
        self.jobs: dict[str, scheduler_v1.Job] = {}
        self.calls: list[str] = []
        self.refuse: set[str] = set()
        self.list_gate: asyncio.Event | None = None

    def _call(self, method: str) -> None:
        self.calls.append(method)
        if method in self.refuse:
            raise gexc.PermissionDenied(f"{method} refused")

    async def list_jobs(self, parent: str, identity: GoogleIdentity) -> list[scheduler_v1.Job]:
        self._call("ListJobs")
        if self.list_gate is not None:
            await self.list_gate.wait()
        return [copy.deepcopy(j) for n, j in self.jobs.items() if n.startswith(parent + "/")]

    async def get_job(self, name: str, identity: GoogleIdentity) -> scheduler_v1.Job | None:
        self._call("GetJob")
        return copy.deepcopy(self.jobs.get(name))

    async def create_job(self, parent: str, job: scheduler_v1.Job,
                         identity: GoogleIdentity) -> scheduler_v1.Job:
        self._call("CreateJob")
        stored = copy.deepcopy(job)
        stored.state = scheduler_v1.Job.State.ENABLED
        self.jobs[job.name] = stored
        return copy.deepcopy(stored)

    async def create_job_or_none(self, parent: str, job: scheduler_v1.Job,
                                 identity: GoogleIdentity) -> scheduler_v1.Job | None:
        if job.name in self.jobs:
            return None
        return await self.create_job(parent, job, identity)

    async def update_job(self, job: scheduler_v1.Job, mask: list[str],
                         identity: GoogleIdentity) -> scheduler_v1.Job:
        self._call("UpdateJob")
        stored = self.jobs[job.name]
        for path in mask:
            head, _, leaf = path.partition(".")
            if leaf:
                setattr(getattr(stored, head), leaf, getattr(getattr(job, head), leaf))
            else:
                setattr(stored, head, getattr(job, head))
        return copy.deepcopy(stored)

    async def ensure_state(self, job: scheduler_v1.Job, paused: bool,
                           identity: GoogleIdentity) -> tuple[scheduler_v1.Job, str | None]:
        state = scheduler_v1.Job.State
        want = state.PAUSED if paused else state.ENABLED
        if job.state == want:
            return job, None
        self._call("PauseJob" if paused else "ResumeJob")
        self.jobs[job.name].state = want
        return copy.deepcopy(self.jobs[job.name]), "Paused" if paused else "Resumed"


class FakeEvents:
    def __init__(self) -> None:
        self.posted: list[tuple[str, str, str]] = []

    def normal(self, ref: ObjectRef, reason: str, message: str) -> None:
        self.posted.append(("Normal", reason, message))

    def warning(self, ref: ObjectRef, reason: str, message: str) -> None:
        self.posted.append(("Warning", reason, message))


class FakeTasks:
    """Tasks and queues by name; a task absent from `tasks` is gone (finished)."""

    def __init__(self) -> None:
        self.tasks: dict[str, ObservedTask] = {}
        self.queues: dict[str, ObservedQueue] = {}
        self.calls: list[str] = []

    async def get_task(self, name: str, identity: GoogleIdentity) -> ObservedTask | None:
        self.calls.append("GetTask")
        return self.tasks.get(name)

    async def list_tasks(self, queue: str, identity: GoogleIdentity) -> list[ObservedTask]:
        self.calls.append("ListTasks")
        return [t for n, t in self.tasks.items() if n.startswith(queue + "/")]

    async def get_queue(self, name: str, identity: GoogleIdentity) -> ObservedQueue | None:
        self.calls.append("GetQueue")
        return self.queues.get(name)
