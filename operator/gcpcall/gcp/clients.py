"""The Google clients of one operator process: opened once at startup, closed at shutdown.

Why here: only gcp/ may touch gRPC and the Google libraries, yet startup must own the
channels' lifetime. This object opens one channel per service (`channels.open_channel`)
and builds the adapters on them; startup holds it and closes it.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from gcpcall.config import Endpoints
from gcpcall.gcp.channels import open_channel
from gcpcall.gcp.scheduler import SchedulerAdapter
from gcpcall.gcp.tasks import TasksAdapter

__all__ = ["GoogleClients"]


@dataclass
class GoogleClients:
    scheduler: SchedulerAdapter
    tasks: TasksAdapter
    _channels: tuple[grpc.aio.Channel, ...]

    @classmethod
    def open(cls, endpoints: Endpoints) -> GoogleClients:
        scheduler_channel = open_channel(endpoints.scheduler, endpoints)
        tasks_channel = open_channel(endpoints.tasks, endpoints)
        return cls(SchedulerAdapter(scheduler_channel), TasksAdapter(tasks_channel),
                   (scheduler_channel, tasks_channel))

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()
