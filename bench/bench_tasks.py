"""P2 for GcpTask: create throughput of the operator against a bare asyncio client.

Why a ratio: the machines are shared and noisy, so an absolute rate says little. Both
sides run in one process tree against the same real API server and the same emulator, in
the same run, handling N GcpTasks applied at once:

- baseline: a bare asyncio script watches GcpTasks in its namespace and, for each new
  object, does exactly one CreateTask (the official async Cloud Tasks client) and one
  status patch, at most `--concurrency` at a time;
- operator: `gcpcall-operator run`, limited to its own namespace, with the same number
  of kopf workers (`--concurrency`), and default cadences.

Throughput is N / (last object Ready - first create sent). The tasks are scheduled an hour
ahead, so nothing dispatches and the poller stays quiet: this measures creation only.

Run from the repository root (needs `make controlplane`):
    .venv/bin/python -m bench.bench_tasks --count 1000
or as part of the suite: `python -m bench tasks --tasks-n 1000` (stack from bench/harness.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import ssl
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports import (
    CloudTasksGrpcAsyncIOTransport,
    CloudTasksGrpcTransport,
)

from bench.harness import CLUSTER, LOCATION, PROJECT, Stack, process, stack
from gcpcall.api import naming
from gcpcall.kube import Connection, KubeClient, load_connection

__all__ = ["main", "run"]

QUEUE = "bench"
PLURAL_PATH = "/apis/gcpcall.dev/v1alpha1/namespaces/{ns}/gcptasks"
RUNNER = f"runner@{PROJECT}.iam.gserviceaccount.com"


def spec(schedule_time: str) -> dict[str, Any]:
    return {
        "queue": QUEUE,
        "target": {
            "uri": "https://target.googleapis.com/v1/launch",
            "method": "POST",
            "headers": [{"name": "Content-Type", "value": "application/json"}],
            "body": {"json": {"size": 4}},
            "auth": {"oauth": {}, "serviceAccountEmail": RUNNER},
        },
        "scheduleTime": schedule_time,
        "dispatchDeadlineSeconds": 60,
    }


def say(message: str) -> None:
    print(f"[bench_tasks] {message}", file=sys.stderr, flush=True)


def an_hour_ahead() -> str:
    when = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _ssl(conn: Connection) -> ssl.SSLContext | bool:
    if conn.insecure:
        return False
    ctx = ssl.create_default_context(cafile=conn.ca_path)
    if conn.cert_path and conn.key_path:
        ctx.load_cert_chain(conn.cert_path, conn.key_path)
    return ctx


class Watch:
    """A watch of one namespace's GcpTasks (or `plural`), calling `on_event(type, object)`
    per event."""

    def __init__(self, conn: Connection, namespace: str,
                 on_event: Callable[[str, dict[str, Any]], None],
                 plural: str = "gcptasks") -> None:
        self.conn = conn
        self.namespace = namespace
        self.plural = plural
        self.on_event = on_event
        self.ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def started(self) -> None:
        """Wait until the watch is open; a failure to open it is raised here."""
        assert self._task is not None
        ready = asyncio.create_task(self.ready.wait())
        await asyncio.wait({ready, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            ready.cancel()
            self._task.result()  # raises what stopped the watch
            raise RuntimeError("the watch ended before it was open")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        token = self.conn.current_token()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        url = self.conn.server + PLURAL_PATH.format(ns=self.namespace).replace(
            "/gcptasks", f"/{self.plural}")
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        connector = aiohttp.TCPConnector(ssl=_ssl(self.conn))
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            for _ in range(60):  # a new CRD's storage answers 429 for a moment
                async with session.get(url, headers=headers) as resp:
                    if resp.status != 429:
                        resp.raise_for_status()
                        listing = await resp.json()
                        break
                await asyncio.sleep(0.5)
            else:
                raise RuntimeError(f"{url} kept answering 429")
            version = listing["metadata"]["resourceVersion"]
            for item in listing["items"]:
                self.on_event("ADDED", item)
            while True:  # the API server closes a watch it finds slow; resume it
                params = {"watch": "1", "resourceVersion": version,
                          "allowWatchBookmarks": "true"}
                async with session.get(url, headers=headers, params=params) as resp:
                    resp.raise_for_status()
                    self.ready.set()
                    while line := await resp.content.readline():
                        event = json.loads(line)
                        if event["type"] == "ERROR":  # 410 Gone: too old to resume
                            raise RuntimeError(f"watch of {self.namespace}: {event}")
                        version = event["object"]["metadata"]["resourceVersion"]
                        if event["type"] != "BOOKMARK":
                            self.on_event(event["type"], event["object"])


async def create_objects(kube: KubeClient, namespace: str, names: list[str],
                         concurrency: int) -> float:
    """Create the objects, `concurrency` at a time; returns when the first was sent."""
    gate = asyncio.Semaphore(concurrency)
    schedule = an_hour_ahead()
    started = time.monotonic()

    async def one(name: str) -> None:
        async with gate:
            await kube.request("POST", PLURAL_PATH.format(ns=namespace), body={
                "apiVersion": "gcpcall.dev/v1alpha1", "kind": "GcpTask",
                "metadata": {"name": name}, "spec": spec(schedule)})

    await asyncio.gather(*(one(n) for n in names))
    return started


async def wait_all(done: Callable[[], int], count: int, what: str, limit: float) -> None:
    deadline = time.monotonic() + limit
    while done() < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: only {done()} of {count} done in {limit:.0f} s")
        await asyncio.sleep(0.05)


# --- the baseline --------------------------------------------------------------------------


class Baseline:
    """The floor: watch event -> CreateTask -> one status patch, nothing else."""

    def __init__(self, kube: KubeClient, grpc_target: str, concurrency: int) -> None:
        self.kube = kube
        channel = grpc.aio.insecure_channel(grpc_target)
        self.client = tasks_v2.CloudTasksAsyncClient(
            transport=CloudTasksGrpcAsyncIOTransport(channel=channel))
        self.gate = asyncio.Semaphore(concurrency)
        self.seen: set[str] = set()
        self.handled: dict[str, float] = {}
        self.pending: set[asyncio.Task[None]] = set()

    def on_event(self, kind: str, obj: dict[str, Any]) -> None:
        uid = obj["metadata"]["uid"]
        if kind != "ADDED" or uid in self.seen:
            return
        self.seen.add(uid)
        task = asyncio.create_task(self.handle(obj))
        self.pending.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            say(f"baseline: a handler failed: {task.exception()!r}")

    async def handle(self, obj: dict[str, Any]) -> None:
        meta, body = obj["metadata"], obj["spec"]
        name = naming.task_name(PROJECT, LOCATION, body["queue"], CLUSTER, meta["namespace"],
                                meta["name"], meta["uid"])
        target = body["target"]
        task = tasks_v2.Task(
            name=name,
            http_request=tasks_v2.HttpRequest(
                url=target["uri"], http_method=tasks_v2.HttpMethod.POST,
                headers={h["name"]: h["value"] for h in target["headers"]},
                body=json.dumps(target["body"]["json"], separators=(",", ":")).encode(),
                oauth_token=tasks_v2.OAuthToken(
                    service_account_email=target["auth"]["serviceAccountEmail"],
                    scope="https://www.googleapis.com/auth/cloud-platform"),
            ),
            schedule_time=datetime.datetime.fromisoformat(
                body["scheduleTime"].replace("Z", "+00:00")),
            dispatch_deadline=datetime.timedelta(seconds=body["dispatchDeadlineSeconds"]),
        )
        async with self.gate:
            created = await self.client.create_task(parent=name.rsplit("/tasks/", 1)[0],
                                                    task=task)
            now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            await self.kube.request(
                "PATCH",
                PLURAL_PATH.format(ns=meta["namespace"]) + f"/{meta['name']}/status",
                body={"status": {
                    "phase": "Queued", "taskName": created.name, "dispatchCount": 0,
                    "conditions": [{"type": "Ready", "status": "True", "reason": "Created",
                                    "message": "", "lastTransitionTime": now}]}},
                content_type="application/merge-patch+json",
            )
        self.handled[meta["name"]] = time.monotonic()


# --- the run ------------------------------------------------------------------------------


def ready_true(obj: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (obj.get("status") or {}).get("conditions") or [])


def tasks_calls(s: Stack) -> dict[str, int]:
    counts: dict[str, int] = {}
    for call in s.calls():
        if call["service"].endswith("CloudTasks"):
            counts[call["method"]] = counts.get(call["method"], 0) + 1
    return counts


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def timed(count: int, concurrency: int, kube: KubeClient, namespace: str,
                done: Callable[[], int], what: str) -> float:
    names = [f"t-{i:05d}" for i in range(count)]
    creating = asyncio.create_task(create_objects(kube, namespace, names, concurrency))
    await wait_all(done, count, what, limit=max(120.0, count * 0.5))
    started = await creating
    return time.monotonic() - started


async def run_baseline(s: Stack, count: int, concurrency: int, apply_concurrency: int,
                       kube: KubeClient) -> dict[str, Any]:
    ns = s.namespace("tasks-baseline")
    base = Baseline(kube, s.grpc_target, concurrency)
    watch = Watch(load_connection(s.kubeconfig), ns, base.on_event)
    watch.start()
    await watch.started()
    say("baseline: watching; warm-up")
    await create_objects(kube, ns, ["warm-up"], 1)
    await wait_all(lambda: len(base.handled), 1, "baseline warm-up", 60)
    calls = tasks_calls(s)
    say(f"baseline: {count} objects")
    seconds = await timed(count, apply_concurrency, kube, ns,
                          lambda: len(base.handled) - 1, "baseline")
    say(f"baseline: {seconds:.1f} s")
    await watch.stop()
    return {"seconds": seconds, "calls": delta(tasks_calls(s), calls)}


async def run_operator(s: Stack, count: int, apply_concurrency: int,
                       kube: KubeClient) -> dict[str, Any]:
    ns = s.namespace("tasks-operator")
    # the operator as users run it, limited to its namespace, with default cadences
    cmd = os.environ.get("BENCH_OPERATOR_CMD")  # as in harness.Stack.operator
    args = cmd.split() if cmd else [sys.executable, "-m", "gcpcall", "run",
                                    "--metrics-port", "0", "--liveness", ""]
    args += ["--namespace", ns]
    with process(args, s.work / "tasks-operator.log", env=s.operator_env()) as proc:
        ready: set[str] = set()

        def on_event(kind: str, obj: dict[str, Any]) -> None:
            if kind != "DELETED" and ready_true(obj):
                ready.add(obj["metadata"]["name"])

        watch = Watch(load_connection(s.kubeconfig), ns, on_event)
        watch.start()
        await watch.started()
        say("operator: watching; warm-up")
        await create_objects(kube, ns, ["warm-up"], 1)
        await wait_all(lambda: len(ready), 1, "operator warm-up", 60)
        calls = tasks_calls(s)
        cpu = cpu_seconds(proc.pid)
        say(f"operator: {count} objects")
        seconds = await timed(count, apply_concurrency, kube, ns,
                              lambda: len(ready) - 1, "operator")
        cpu = cpu_seconds(proc.pid) - cpu
        say(f"operator: {seconds:.1f} s")
        await watch.stop()
        # The operator paces its events (observe.events): they trail the burst. How long?
        ready_at = time.monotonic()

        async def created_events() -> int:
            doc = await kube.request("GET", f"/api/v1/namespaces/{ns}/events")
            return sum(1 for e in doc.get("items", []) if e.get("reason") == "Created")

        while await created_events() < count + 1:
            if time.monotonic() - ready_at > max(120.0, count * 0.2):
                raise RuntimeError("the operator's Created events did not all arrive")
            await asyncio.sleep(0.5)
        trail = time.monotonic() - ready_at
        say(f"operator: every Created event posted {trail:.0f} s after the last Ready")
    return {"seconds": seconds, "cpu_seconds": round(cpu, 2),
            "calls": delta(tasks_calls(s), calls), "events_trail_seconds": round(trail, 1)}


async def _run(s: Stack, count: int, concurrency: int, apply_concurrency: int
               ) -> dict[str, Any]:
    kube = KubeClient(load_connection(s.kubeconfig))
    try:
        baseline = await run_baseline(s, count, concurrency, apply_concurrency, kube)
        operator = await run_operator(s, count, apply_concurrency, kube)
    finally:
        await kube.close()
    base_rate = count / baseline["seconds"]
    op_rate = count / operator["seconds"]
    return {
        "count": count,
        "concurrency": concurrency,
        "apply_concurrency": apply_concurrency,
        "baseline": {**baseline, "per_second": round(base_rate, 1)},
        "operator": {**operator, "per_second": round(op_rate, 1)},
        "ratio": round(op_rate / base_rate, 3),
    }


def run(s: Stack, count: int = 1000, concurrency: int = 200,
        apply_concurrency: int = 50) -> dict[str, Any]:
    """P2 for GcpTask on a running stack: the baseline first, then the operator."""
    parent = f"projects/{PROJECT}/locations/{LOCATION}"
    client = tasks_v2.CloudTasksClient(
        transport=CloudTasksGrpcTransport(channel=grpc.insecure_channel(s.grpc_target)))
    client.create_queue(parent=parent, queue=tasks_v2.Queue(name=f"{parent}/queues/{QUEUE}"))
    return asyncio.run(_run(s, count, concurrency, apply_concurrency))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_tasks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1000, help="GcpTasks per side")
    parser.add_argument("--concurrency", type=int, default=200,
                        help="the baseline's handlers at once; keep it equal to kopf's "
                             "worker_limit (200, set in gcpcall.handlers.startup)")
    parser.add_argument("--apply-concurrency", type=int, default=50,
                        help="object creates in flight (the 'kubectl apply' side)")
    args = parser.parse_args(argv)
    with stack() as s:
        say(f"logs in {s.work}")
        result = run(s, args.count, args.concurrency, args.apply_concurrency)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
