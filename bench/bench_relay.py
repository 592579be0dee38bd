"""Relay benchmarks: P8 (overhead), P9 (throughput), P10 (operation following), R6 at size.

Each compares against a baseline measured in the same run on the same stack:
- P8: job fires -> the target receives the call, a Relay job against a Direct job, fired
  alternately by the emulator (the same target, an OIDC token on both calls).
- P9: 200 requests in flight to the relay, against `bare_relay.py` (an aiohttp handler
  that verifies the same token against the same certificates, cached, and forwards the same
  request to the same target), at the same concurrency.
- P10: 200 compute operations in flight across 20 objects: the delay from an operation's
  end (its `endTime`) to the run showing it, and the polls per operation-hour after the
  first minute, against a bare poller on google-api-core's default polling schedule
  (`exponential_sleep_generator(1.0, 20.0, 1.5)`) following the same kind of operations.
- R6: forged, expired, wrong-audience and wrong-account tokens mixed into genuine calls.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import socket
import statistics
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import aiohttp
from kubernetes import client as k8s_client

from bench.harness import REPO, Stack, process, wait_for

GROUP, VERSION, PLURAL = "gcpcall.dev", "v1alpha1", "scheduledgcpcalls"
RELAY_HOST = "relay.bench.test"
RELAY_URL = f"https://{RELAY_HOST}/relay"
TARGET_HOST = "target.bench.test"
GSA = "bench-operator@bench-project.iam.gserviceaccount.com"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Arrivals:
    """A target that notes when each path was first called."""

    def __init__(self) -> None:
        self.first: dict[str, float] = {}
        self.count = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                now = time.time()
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with outer.lock:
                    outer.first.setdefault(self.path, now)
                    outer.count += 1
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            do_GET = do_POST

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def relay_env(s: Stack, port: int, target_port: int) -> dict[str, str]:
    http = f"http://127.0.0.1:{s.http_port}"
    googleapis = f"{http}/googleapis/compute.googleapis.com"
    return {
        "GCE_METADATA_HOST": http.removeprefix("http://"),
        "GCPCALL_IAM_CREDENTIALS_ENDPOINT": http,
        "GCPCALL_OIDC_CERTS_URL": f"{http}/oauth2/v1/certs",
        "GCPCALL_RELAY_URL": RELAY_URL, "GCPCALL_RELAY_PORT": str(port),
        "GCPCALL_RELAY_ADDRESS": "127.0.0.1",
        "GCPCALL_HOST_MAP": (f"{TARGET_HOST}=http://127.0.0.1:{target_port},"
                             f"compute.googleapis.com={googleapis}"),
    }


@contextmanager
def relay_operator(s: Stack, name: str, namespace: str,
                   target: Arrivals) -> Iterator[tuple[int, Any]]:
    port = free_port()
    s.admin("PUT", "/hostmap", {"host": RELAY_HOST, "base_url": f"http://127.0.0.1:{port}"})
    s.admin("PUT", "/hostmap", {"host": TARGET_HOST,
                                "base_url": f"http://127.0.0.1:{target.port}"})
    s.admin("PUT", "/metadata", {"email": GSA, "projectId": "bench-project"})
    with s.operator(name, namespaces=(namespace,), **relay_env(s, port, target.port)) as proc:
        wait_for(lambda: _healthy(port), 60, "the relay")
        yield port, proc


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
            return True
    except OSError:
        return False


def call(name: str, path: str, delivery: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "ScheduledGcpCall",
        "metadata": {"name": name},
        "spec": {"schedule": "0 0 1 1 *", "timeZone": "Etc/UTC", "delivery": delivery,
                 "historyLimit": 50, "retry": {"retryCount": 0},
                 "target": {"uri": f"https://{TARGET_HOST}{path}", "method": "POST"},
                 **spec},
    }


def _ready_objects(s: Stack, ns: str, names: list[str]) -> dict[str, dict[str, Any]]:
    api = k8s_client.CustomObjectsApi(s.api)

    def ready() -> dict[str, dict[str, Any]] | None:
        items = {o["metadata"]["name"]: o for o in
                 api.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]}
        ok = all(any(c.get("type") == "Ready" and c.get("status") == "True"
                     for c in (items.get(n, {}).get("status") or {}).get("conditions") or [])
                 for n in names)
        return items if ok else None

    return dict(wait_for(ready, 120, "objects Ready"))


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


# --- P8 ---------------------------------------------------------------------------------

def p8(s: Stack, n: int = 30, gap: float = 0.0) -> dict[str, float]:
    """`gap`: a pause after each fire, so the next one does not meet the operator still
    handling the watch event of the previous Relay run's status write (a real job fires
    minutes apart); 0 fires back to back."""
    ns = s.namespace("p8")
    target = Arrivals()
    api = k8s_client.CustomObjectsApi(s.api)
    with relay_operator(s, "p8-operator", ns, target):
        # Both calls carry an OIDC token for the target, as a real call would: Cloud
        # Scheduler mints one per attempt (for the target, or for the relay).
        for kind, delivery in (("direct", "Direct"), ("relay", "Relay")):
            body = call(kind, f"/p8/{kind}", delivery)
            body["spec"]["target"]["auth"] = {"oidc": {"audience": f"https://{TARGET_HOST}"}}
            api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)
        objs = _ready_objects(s, ns, ["direct", "relay"])
        jobs = {k: objs[k]["status"]["jobName"] for k in ("direct", "relay")}
        delays: dict[str, list[float]] = {"direct": [], "relay": []}
        for i in range(n + 2):  # the first of each warms up
            for kind in ("direct", "relay") if i % 2 else ("relay", "direct"):
                before = target.count
                start = time.time()
                s.admin("POST", "/scheduler/fire", {"job": jobs[kind], "wait": True})
                wait_for(lambda b=before: target.count > b, 30, "the call")
                with target.lock:
                    arrived = target.first.pop(f"/p8/{kind}")
                if i >= 2:
                    delays[kind].append(arrived - start)
                if gap:
                    time.sleep(gap)
    direct, relay = statistics.median(delays["direct"]), statistics.median(delays["relay"])
    return {"fires_each": n, "gap_s": gap, "direct_median_ms": direct * 1000,
            "relay_median_ms": relay * 1000, "ratio": relay / direct}


# --- P9 and R6 ------------------------------------------------------------------------

def id_token(s: Stack, audience: str = RELAY_URL) -> str:
    req = urllib.request.Request(
        f"http://127.0.0.1:{s.http_port}/computeMetadata/v1/instance/service-accounts/default/"
        f"identity?audience={audience}", headers={"Metadata-Flavor": "Google"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return str(resp.read().decode())


async def _blast(url: str, requests: list[tuple[str, bytes, str]], concurrency: int
                 ) -> tuple[float, list[int]]:
    gate = asyncio.Semaphore(concurrency)

    async def one(session: aiohttp.ClientSession, token: str, body: bytes, when: str) -> int:
        async with gate, session.post(url, data=body, headers={
                "Authorization": f"Bearer {token}", "Content-Type": "application/json",
                "X-CloudScheduler-ScheduleTime": when}) as resp:
            await resp.read()
            return resp.status

    async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        start = time.perf_counter()
        codes = await asyncio.gather(*(one(session, t, b, w) for t, b, w in requests))
        return time.perf_counter() - start, list(codes)


def _objects(s: Stack, ns: str, count: int, prefix: str) -> list[bytes]:
    api = k8s_client.CustomObjectsApi(s.api)
    names = [f"{prefix}-{i}" for i in range(count)]
    for name in names:
        api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL,
                                            call(name, f"/{prefix}/{name}", "Relay"))
    objs = _ready_objects(s, ns, names)
    return [json.dumps({"apiVersion": f"{GROUP}/{VERSION}", "kind": "ScheduledGcpCall",
                        "namespace": ns, "name": n, "uid": objs[n]["metadata"]["uid"]}).encode()
            for n in names]


def _times(k: int, base: datetime.datetime) -> str:
    return (base + datetime.timedelta(minutes=k)).strftime("%Y-%m-%dT%H:%M:%SZ")


def p9(s: Stack, total: int = 1000, concurrency: int = 200) -> dict[str, float]:
    ns = s.namespace("p9")
    target = Arrivals()
    with relay_operator(s, "p9-operator", ns, target) as (port, proc):
        envelopes = _objects(s, ns, 20, "p9")
        token = id_token(s)
        base = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
        requests = [(token, envelopes[k % 20], _times(k, base)) for k in range(total)]
        bare_port = free_port()
        with process([sys.executable, str(REPO / "bench" / "bare_relay.py"), str(bare_port),
                      f"http://127.0.0.1:{s.http_port}/oauth2/v1/certs", RELAY_URL,
                      f"http://127.0.0.1:{target.port}/p9-bare"], s.work / "bare-relay.log",
                     env=dict(os.environ), pipe=True) as bare:
            assert bare.stdout is not None
            bare.stdout.readline()
            # warm-up on both (connections, certificates, token caches)
            asyncio.run(_blast(f"http://127.0.0.1:{port}/relay", requests[:20], 20))
            asyncio.run(_blast(f"http://127.0.0.1:{bare_port}/relay", requests[:20], 20))
            relay_s, relay_codes = asyncio.run(_blast(f"http://127.0.0.1:{port}/relay",
                                                      requests[20:], concurrency))
            rss = rss_mb(proc.pid)
            bare_s, bare_codes = asyncio.run(_blast(f"http://127.0.0.1:{bare_port}/relay",
                                                    requests[20:], concurrency))
    calls = total - 20
    return {"calls": calls, "concurrency": concurrency,
            "relay_per_s": calls / relay_s, "bare_per_s": calls / bare_s,
            "ratio": bare_s / relay_s, "relay_non_200": sum(c != 200 for c in relay_codes),
            "bare_non_200": sum(c != 200 for c in bare_codes),
            "operator_rss_mb_after": rss}


# --- P10 ------------------------------------------------------------------------------

def _compute_ops(s: Stack) -> list[dict[str, Any]]:
    return list(s.admin("GET", "/googleapis/compute/operations")["operations"])


def _polls_per_op_hour(s: Stack, ops: list[dict[str, Any]], after: float) -> float:
    """Polls of `ops` made more than `after` seconds after each one started, per hour."""
    log = s.admin("GET", "/googleapis/requests?method=GET")["requests"]
    by_path: dict[str, list[float]] = {}
    for r in log:
        by_path.setdefault(r["path"], []).append(
            datetime.datetime.fromisoformat(r["time"].replace("Z", "+00:00")).timestamp())
    polls, seconds = 0, 0.0
    for op in ops:
        path = op["selfLink"].removeprefix("https://compute.googleapis.com")
        start = datetime.datetime.fromisoformat(op["insertTime"]).timestamp()
        end = datetime.datetime.fromisoformat(op["endTime"]).timestamp() if op.get(
            "endTime") else time.time()
        polls += sum(1 for t in by_path.get(path, []) if t - start > after)
        seconds += max(0.0, end - start - after)
    return polls / (seconds / 3600) if seconds else 0.0


def p10(s: Stack, objects: int = 20, per_object: int = 10,
        done_after: float = 150.0) -> dict[str, float]:
    ns = s.namespace("p10")
    target = Arrivals()
    api = k8s_client.CustomObjectsApi(s.api)
    for i in range(objects):
        s.admin("PUT", "/googleapis/compute/instance-group-managers",
                {"project": "bench-project", "zone": "europe-west3-a", "name": f"mig-{i}",
                 "done_after_seconds": done_after})
    s.admin("DELETE", "/googleapis/requests")
    with relay_operator(s, "p10-operator", ns, target) as (port, _):
        names = [f"p10-{i}" for i in range(objects)]
        for i, name in enumerate(names):
            body = call(name, "/x", "Relay", operation={"follow": True})
            body["spec"]["target"] = {
                "uri": "https://compute.googleapis.com/compute/v1/projects/bench-project/zones/"
                       f"europe-west3-a/instanceGroupManagers/mig-{i}/resize?size=3",
                "method": "POST"}
            api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)
        objs = _ready_objects(s, ns, names)
        token = id_token(s)
        base = datetime.datetime(2026, 2, 1, tzinfo=datetime.UTC)
        requests = []
        for i, name in enumerate(names):
            env = json.dumps({"apiVersion": f"{GROUP}/{VERSION}", "kind": "ScheduledGcpCall",
                              "namespace": ns, "name": name,
                              "uid": objs[name]["metadata"]["uid"]}).encode()
            requests += [(token, env, _times(i * 100 + k, base)) for k in range(per_object)]
        asyncio.run(_blast(f"http://127.0.0.1:{port}/relay", requests, 200))
        seen: dict[tuple[str, str], float] = {}

        def all_done() -> bool:
            items = api.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]
            now = time.time()
            for o in items:
                for r in (o.get("status") or {}).get("runs") or []:
                    if (r.get("operation") or {}).get("done"):
                        seen.setdefault((o["metadata"]["name"], r["scheduleTime"]), now)
            return len(seen) >= objects * per_object

        wait_for(all_done, done_after + 300, "every operation shown done")
        ops = [o for o in _compute_ops(s) if "mig-" in o["targetLink"]]
        ends = sorted(datetime.datetime.fromisoformat(o["endTime"]).timestamp() for o in ops)
        shown = sorted(seen.values())
        delays = [b - a for a, b in zip(ends, shown, strict=False)]
        ours = _polls_per_op_hour(s, ops, 60.0)
    baseline = _api_core_baseline(s, objects, done_after)
    return {"operations": len(ops), "done_to_status_median_s": statistics.median(delays),
            "done_to_status_max_s": max(delays), "polls_per_op_hour_after_1min": ours,
            "api_core_polls_per_op_hour_after_1min": baseline}


def _api_core_baseline(s: Stack, count: int, done_after: float) -> float:
    """Operations polled on google-api-core's default schedule, measured the same way."""
    from google.api_core.retry import exponential_sleep_generator

    for i in range(count):
        s.admin("PUT", "/googleapis/compute/instance-group-managers",
                {"project": "bench-project", "zone": "europe-west3-a", "name": f"base-{i}",
                 "done_after_seconds": done_after})
    base = f"http://127.0.0.1:{s.http_port}/googleapis/compute.googleapis.com"

    async def follow(session: aiohttp.ClientSession, i: int) -> None:
        async with session.post(f"{base}/compute/v1/projects/bench-project/zones/"
                                f"europe-west3-a/instanceGroupManagers/base-{i}/resize?size=3"
                                ) as resp:
            op = await resp.json()
        url = op["selfLink"].replace("https://compute.googleapis.com", base)
        for sleep in exponential_sleep_generator(1.0, 20.0, 1.5):
            await asyncio.sleep(sleep)
            async with session.get(url) as resp:
                if (await resp.json())["status"] == "DONE":
                    return

    async def run() -> None:
        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(follow(session, i) for i in range(count)))

    asyncio.run(run())
    ops = [o for o in _compute_ops(s) if "base-" in o["targetLink"]]
    return _polls_per_op_hour(s, ops, 60.0)


# --- R6 at full size ------------------------------------------------------------------

def r6(s: Stack, genuine: int = 1000, forged: int = 1000) -> dict[str, Any]:
    from tests.reliability.test_relay_forgeries import forged as forge

    ns = s.namespace("r6")
    target = Arrivals()
    with relay_operator(s, "r6-operator", ns, target) as (port, _):
        envelopes = _objects(s, ns, 20, "r6")
        with urllib.request.urlopen(f"http://127.0.0.1:{s.http_port}/oauth2/v1/certs") as r:
            kid = next(iter(json.loads(r.read())))
        good = id_token(s)
        expired = s.admin("POST", "/tokens/id", {"email": GSA, "audience": RELAY_URL,
                                                 "lifetime_seconds": 600,
                                                 "issued_seconds_ago": 7200})["token"]
        other_audience = id_token(s, "https://elsewhere.example/")
        bad = [forge(GSA, kid), expired, other_audience]
        base = datetime.datetime(2026, 3, 1, tzinfo=datetime.UTC)
        requests = [(good, envelopes[k % 20], _times(k, base)) for k in range(genuine)]
        requests += [(bad[k % 3], envelopes[k % 20], _times(-k - 1, base))
                     for k in range(forged)]
        elapsed, codes = asyncio.run(_blast(f"http://127.0.0.1:{port}/relay", requests, 200))
    genuine_codes, forged_codes = codes[:genuine], codes[genuine:]
    return {"genuine": genuine, "forged": forged, "seconds": elapsed,
            "genuine_200": genuine_codes.count(200),
            "forged_refused": sum(c in (401, 403) for c in forged_codes),
            "target_calls": target.count}
