"""The P1/P2 floor: a bare asyncio controller doing the least the operator must do.

Watch ScheduledGcpCalls in one namespace; on ADDED, CreateJob in the emulator and one
status merge patch (Ready=True). No validation, no identity, no retries, no events: the
cost of the watch event -> Create RPC -> status patch path alone.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import sys

import aiohttp
import grpc
from google.cloud import scheduler_v1
from google.cloud.scheduler_v1.services.cloud_scheduler.transports import (
    CloudSchedulerGrpcAsyncIOTransport,
)

from gcpcall.kube import KubeClient, ObjectRef, load_connection

PLURAL = "scheduledgcpcalls"


async def handle(kube: KubeClient, client: scheduler_v1.CloudSchedulerAsyncClient,
                 obj: dict, parent: str) -> None:
    meta, spec = obj["metadata"], obj["spec"]
    job = scheduler_v1.Job(
        name=f"{parent}/jobs/bare_{meta['namespace']}_{meta['name']}",
        schedule=spec["schedule"], time_zone=spec.get("timeZone", "Etc/UTC"),
        http_target=scheduler_v1.HttpTarget(uri=spec["target"]["uri"]),
    )
    created = await client.create_job(parent=parent, job=job)
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    ref = ObjectRef("ScheduledGcpCall", PLURAL, meta["namespace"], meta["name"], meta["uid"])
    await kube.patch_status(ref, {
        "observedGeneration": meta.get("generation", 1), "jobName": created.name,
        "conditions": [{"type": "Ready", "status": "True", "reason": "UpToDate",
                        "message": "", "lastTransitionTime": now}],
    })


async def main(namespace: str, grpc_target: str, parent: str) -> None:
    conn = load_connection()
    kube = KubeClient(conn)
    channel = grpc.aio.insecure_channel(grpc_target)
    client = scheduler_v1.CloudSchedulerAsyncClient(
        transport=CloudSchedulerGrpcAsyncIOTransport(channel=channel))
    session = kube._get_session()
    url = (f"{conn.server}/apis/gcpcall.dev/v1alpha1/namespaces/{namespace}/{PLURAL}"
           "?watch=true&allowWatchBookmarks=false")
    headers = {"Authorization": f"Bearer {conn.current_token()}"}
    tasks: set[asyncio.Task[None]] = set()
    async with session.get(url, headers=headers,
                           timeout=aiohttp.ClientTimeout(total=None)) as resp:
        print("ready", flush=True)
        async for line in resp.content:
            event = json.loads(line)
            if event.get("type") == "ADDED":
                task = asyncio.create_task(handle(kube, client, event["object"], parent))
                tasks.add(task)
                task.add_done_callback(tasks.discard)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
