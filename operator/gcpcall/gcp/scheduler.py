"""The Cloud Scheduler adapter: the only code that talks to Cloud Scheduler.

Why an adapter: the reconcilers speak in jobs and identities; this module turns that into
RPCs with the identity's token on each call, the project's quota respected, every call
counted by method and code, and NOT_FOUND answered as `None` where "absent" is a normal
answer. Retries are not done here: errors go up to the one classifier (`gcp.errors`), so
that backoff is decided in one place.
"""

from __future__ import annotations

import grpc
from google.api_core import exceptions as gexc
from google.cloud import scheduler_v1
from google.cloud.scheduler_v1.services.cloud_scheduler.transports import (
    CloudSchedulerGrpcAsyncIOTransport,
)
from google.protobuf import field_mask_pb2

from gcpcall.gcp.calls import CountedCalls
from gcpcall.gcp.identity import GoogleIdentity
from gcpcall.ratelimit import QuotaLimiter

__all__ = ["Job", "SchedulerAdapter", "token_email"]

Job = scheduler_v1.Job  # re-exported: the reconcilers hold jobs but import no Google library


_TIMEOUT = 30.0
_PAGE = 500  # ListJobs' largest page
# Cloud Scheduler's quotas, per project and minute.
_QUOTAS = {"read": 1250.0, "write": 500.0}


def token_email(job: Job) -> str:
    """The service account whose token the job's calls carry ("" for none)."""
    target = job.http_target
    return str(target.oauth_token.service_account_email or target.oidc_token.service_account_email)


class SchedulerAdapter:
    """Find/create/update/delete/pause/resume/run/list Cloud Scheduler jobs."""

    def __init__(self, channel: grpc.aio.Channel, limiter: QuotaLimiter | None = None) -> None:
        transport = CloudSchedulerGrpcAsyncIOTransport(channel=channel)
        self._client = scheduler_v1.CloudSchedulerAsyncClient(transport=transport)
        self._call = CountedCalls("cloudscheduler", _QUOTAS, limiter)
        self.recovery = self._call.recovery  # a shared signal that it answers again

    async def get_job(self, name: str, identity: GoogleIdentity) -> scheduler_v1.Job | None:
        return await self._call.or_none(
            "GetJob", name, "read",
            lambda: self._client.get_job(
                name=name, retry=None, timeout=_TIMEOUT, metadata=identity.grpc_metadata()
            ),
        )

    async def create_job(
        self, parent: str, job: scheduler_v1.Job, identity: GoogleIdentity
    ) -> scheduler_v1.Job:
        return await self._call(
            "CreateJob", parent, "write",
            lambda: self._client.create_job(
                parent=parent, job=job, retry=None, timeout=_TIMEOUT,
                metadata=identity.grpc_metadata(),
            ),
        )

    async def create_job_or_none(
        self, parent: str, job: scheduler_v1.Job, identity: GoogleIdentity
    ) -> scheduler_v1.Job | None:
        """Create; None when a job of that name already exists (the caller adopts it)."""
        try:
            return await self.create_job(parent, job, identity)
        except gexc.AlreadyExists:
            return None

    async def update_job(
        self, job: scheduler_v1.Job, mask: list[str], identity: GoogleIdentity
    ) -> scheduler_v1.Job:
        return await self._call(
            "UpdateJob", job.name, "write",
            lambda: self._client.update_job(
                job=job, update_mask=field_mask_pb2.FieldMask(paths=mask), retry=None,
                timeout=_TIMEOUT, metadata=identity.grpc_metadata(),
            ),
        )

    async def delete_job(self, name: str, identity: GoogleIdentity) -> bool:
        """Delete; False when the job was already gone (that counts as done)."""
        return await self._call.deleted(
            "DeleteJob", name, "write",
            lambda: self._client.delete_job(
                name=name, retry=None, timeout=_TIMEOUT, metadata=identity.grpc_metadata()
            ),
        )

    async def pause_job(self, name: str, identity: GoogleIdentity) -> scheduler_v1.Job:
        return await self._call(
            "PauseJob", name, "write",
            lambda: self._client.pause_job(
                name=name, retry=None, timeout=_TIMEOUT, metadata=identity.grpc_metadata()
            ),
        )

    async def resume_job(self, name: str, identity: GoogleIdentity) -> scheduler_v1.Job:
        return await self._call(
            "ResumeJob", name, "write",
            lambda: self._client.resume_job(
                name=name, retry=None, timeout=_TIMEOUT, metadata=identity.grpc_metadata()
            ),
        )

    async def run_job(self, name: str, identity: GoogleIdentity) -> scheduler_v1.Job:
        return await self._call(
            "RunJob", name, "write",
            lambda: self._client.run_job(
                name=name, retry=None, timeout=_TIMEOUT, metadata=identity.grpc_metadata()
            ),
        )

    async def ensure_state(
        self, job: Job, paused: bool, identity: GoogleIdentity
    ) -> tuple[Job, str | None]:
        """Pause or resume the job to match `paused`: (the job, "Paused"/"Resumed"/None)."""
        state = scheduler_v1.Job.State
        if paused and job.state == state.ENABLED:
            return await self.pause_job(job.name, identity), "Paused"
        if not paused and job.state == state.PAUSED:
            return await self.resume_job(job.name, identity), "Resumed"
        return job, None

    async def list_jobs(self, parent: str, identity: GoogleIdentity) -> list[scheduler_v1.Job]:
        """Every job under `parent` (all pages: each page is one counted call)."""
        return await self._call.pages(
            "ListJobs", parent, "read",
            lambda token: self._client.list_jobs(
                request=scheduler_v1.ListJobsRequest(
                    parent=parent, page_size=_PAGE, page_token=token),
                retry=None, timeout=_TIMEOUT, metadata=identity.grpc_metadata(),
            ),
            lambda page: page.jobs,
        )
