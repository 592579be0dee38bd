"""What one write of each kind costs the API server: CPU per write, nobody watching.

Why: P2 turned out to be bound by the API server's CPU, in proportion to the writes per
object; this measures the unit. N GcpTasks are created, then each kind of write is made
once per object (20 in flight), and the `controlplane` process's CPU time (from /proc) is
divided by N. The server runs alone on the stack, so the figure is its own.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench.harness import Stack
from gcpcall.kube import KubeClient, ObjectRef, load_connection

FINALIZER = "gcpcall.dev/finalizer"
_COND = {"type": "Ready", "status": "True", "reason": "Created", "message": "",
         "lastTransitionTime": "2026-12-01T00:00:00Z"}


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _task(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "gcpcall.dev/v1alpha1", "kind": "GcpTask", "metadata": {"name": name},
        "spec": {
            "queue": "q", "delaySeconds": 3600, "dispatchDeadlineSeconds": 45,
            "target": {
                "uri": "https://target.googleapis.com/x", "method": "POST",
                "headers": [{"name": "Content-Type", "value": "application/json"}],
                "body": {"json": {"size": 4}},
                "auth": {"oauth": {}, "serviceAccountEmail": "a@p.iam.gserviceaccount.com"},
            },
        },
    }


async def _measure(s: Stack, n: int) -> dict[str, float]:
    kube = KubeClient(load_connection(s.kubeconfig))
    ns = s.namespace("api-writes")
    path = f"/apis/gcpcall.dev/v1alpha1/namespaces/{ns}/gcptasks"
    refs: dict[int, ObjectRef] = {}
    gate = asyncio.Semaphore(20)
    out: dict[str, float] = {}

    async def each(label: str, write: Callable[[int], Awaitable[Any]]) -> None:
        async def one(i: int) -> None:
            async with gate:
                await write(i)

        before = _cpu_seconds(s.controlplane_pid)
        await asyncio.gather(*(one(i) for i in range(n)))
        out[label] = round((_cpu_seconds(s.controlplane_pid) - before) / n * 1000, 2)

    versions: dict[int, str] = {}

    async def plain_status(i: int) -> None:
        doc = await kube.patch_status(refs[i], {"phase": "Queued"})
        versions[i] = doc["metadata"]["resourceVersion"]

    async def conditional_status(i: int) -> None:
        # the version the previous write returned, as the status writer keeps it
        await kube.patch_status(refs[i], {"phase": "Running", "conditions": [_COND]},
                                resource_version=versions[i])

    async def create(i: int) -> None:
        meta = (await kube.request("POST", path, body=_task(f"o{i}")))["metadata"]
        refs[i] = ObjectRef("GcpTask", "gcptasks", ns, meta["name"], meta["uid"])

    try:
        await each("create", create)
        await each("json patch: remove the finalizer", lambda i: kube.patch_json(refs[i], [
            {"op": "test", "path": "/metadata/finalizers", "value": [FINALIZER]},
            {"op": "replace", "path": "/metadata/finalizers", "value": []}]))
        await each("json patch: add the finalizer", lambda i: kube.patch_json(refs[i], [
            {"op": "test", "path": "/metadata/finalizers", "value": None},
            {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]}]))
        await each("merge patch: an annotation", lambda i: kube.request(
            "PATCH", refs[i].path, body={"metadata": {"annotations": {"example.com/x": "y"}}},
            content_type="application/merge-patch+json"))
        await each("merge patch: status", lambda i: plain_status(i))
        await each("merge patch: status, conditional on its resourceVersion (ours)",
                   lambda i: conditional_status(i))
        await each("server-side apply: status, one field manager (the alternative)",
                   lambda i: kube.request(
                       "PATCH", refs[i].path + "/status",
                       body={"apiVersion": "gcpcall.dev/v1alpha1", "kind": "GcpTask",
                             "metadata": {"name": refs[i].name},
                             "status": {"phase": "Running", "conditions": [_COND]}},
                       content_type="application/apply-patch+yaml",
                       params={"fieldManager": "gcpcall-bench", "force": "true"}))
        await each("GET", lambda i: kube.get_object(refs[i]))
    finally:
        await kube.close()
    return out


def run(s: Stack, n: int = 300) -> dict[str, float]:
    """API-server CPU milliseconds per write, by kind of write."""
    time.sleep(1)
    return asyncio.run(_measure(s, n))
