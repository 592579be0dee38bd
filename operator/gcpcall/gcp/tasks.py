"""The Cloud Tasks adapter: the only code that talks to Cloud Tasks.

Why an adapter: the GcpTask reconciler and poller speak in task names, identities and the
plain observed values of `api.observed`; this module turns that into RPCs with the
identity's token on each call, Cloud Tasks' per-project quotas respected (the list quota is
only 600 a minute), every call counted by method and code, and NOT_FOUND answered as `None`
where "absent" is a normal answer (a finished task is deleted by Cloud Tasks). Retries are
not done here: errors go up to the one classifier (`gcp.errors`).
"""

from __future__ import annotations

import grpc
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcAsyncIOTransport

from gcpcall.api.observed import ObservedQueue, ObservedTask
from gcpcall.gcp.calls import CountedCalls
from gcpcall.gcp.identity import GoogleIdentity
from gcpcall.gcp.tasks_mapping import observed_queue, observed_task
from gcpcall.ratelimit import QuotaLimiter

__all__ = ["TasksAdapter"]


_TIMEOUT = 30.0
_PAGE = 1000  # ListTasks' largest page
# Cloud Tasks' quotas, per project and minute: 6,000,000 API requests, of which List
# requests (ListTasks, ListQueues, ListLocations) at most 600.
_QUOTAS = {"api": 6_000_000.0, "list": 600.0}


def _queue_of(task_name: str) -> str:
    return task_name.rsplit("/tasks/", 1)[0]


class TasksAdapter:
    """Create/get/delete/list Cloud Tasks tasks and read queues, as a given identity."""

    def __init__(self, channel: grpc.aio.Channel, limiter: QuotaLimiter | None = None) -> None:
        transport = CloudTasksGrpcAsyncIOTransport(channel=channel)
        self._client = tasks_v2.CloudTasksAsyncClient(transport=transport)
        self._call = CountedCalls("cloudtasks", _QUOTAS, limiter)
        self.recovery = self._call.recovery  # a shared signal that it answers again

    async def create_task(self, task: tasks_v2.Task, identity: GoogleIdentity) -> ObservedTask:
        """CreateTask in the queue the task's name names. ALREADY_EXISTS is raised (as
        `google.api_core.exceptions.AlreadyExists`): only the caller knows what it means."""
        parent = _queue_of(task.name)
        created = await self._call(
            "CreateTask", parent, "api",
            lambda: self._client.create_task(
                parent=parent, task=task, retry=None, timeout=_TIMEOUT,
                metadata=identity.grpc_metadata(),
            ),
        )
        return observed_task(created)

    async def get_task(self, name: str, identity: GoogleIdentity) -> ObservedTask | None:
        """The task, or None once it is gone (finished or deleted)."""
        task = await self._call.or_none(
            "GetTask", name, "api",
            lambda: self._client.get_task(
                name=name, retry=None, timeout=_TIMEOUT, metadata=identity.grpc_metadata()
            ),
        )
        if task is None:
            return None
        return observed_task(task)

    async def delete_task(self, name: str, identity: GoogleIdentity) -> bool:
        """Delete; False when the task was already gone (that counts as done)."""
        return await self._call.deleted(
            "DeleteTask", name, "api",
            lambda: self._client.delete_task(
                name=name, retry=None, timeout=_TIMEOUT, metadata=identity.grpc_metadata()
            ),
        )

    async def list_tasks(self, queue: str, identity: GoogleIdentity) -> list[ObservedTask]:
        """Every live task of `queue` (all pages; each page is one counted List call)."""
        return await self._call.pages(
            "ListTasks", queue, "list",
            lambda token: self._client.list_tasks(
                request=tasks_v2.ListTasksRequest(parent=queue, page_size=_PAGE, page_token=token),
                retry=None, timeout=_TIMEOUT, metadata=identity.grpc_metadata(),
            ),
            lambda page: (observed_task(t) for t in page.tasks),
        )

    async def get_queue(self, name: str, identity: GoogleIdentity) -> ObservedQueue | None:
        """The queue's state; None when it does not exist."""
        queue = await self._call.or_none(
            "GetQueue", name, "api",
            lambda: self._client.get_queue(
                name=name, retry=None, timeout=_TIMEOUT, metadata=identity.grpc_metadata()
            ),
        )
        return None if queue is None else observed_queue(queue)
