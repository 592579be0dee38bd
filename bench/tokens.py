"""P6: token requests per identity per token lifetime, through the whole Workload Identity
chain (TokenRequest -> STS -> generateAccessToken), with the operator busy throughout.

Why its own emulator: the goal is about refreshes over a token's lifetime, and an hour is
too long to wait. This bench starts an emulator with `--require-auth` (a Scheduler RPC with
an expired or unknown token is refused, so a token used past its life shows) and
`--token-lifetime` (default 120 s: an hour compressed 30 times); the operator's drift check
is compressed by the same factor (600 s -> 20 s), so each identity's group is listed as
often per token lifetime as in production, and a share of the objects is edited every
quarter lifetime (an UpdateJob each, a resolve of the identity each).

What is counted: every STS exchange and every generateAccessToken from the start of the
operator (the first mint of each identity included: "excluding none"), grouped by the
Kubernetes ServiceAccount whose chain asked for it, from the emulator's call log (each
exchange follows exactly one TokenRequest in the operator's code). The figure is the most
requests of one kind any identity made in any window of one token lifetime (a sliding
window over the log's timestamps); the goal is <= 2.

    python -m bench p6 [--p6-objects 1000] [--p6-identities 10] [--p6-lifetime 120]
                       [--p6-lifetimes 5]
"""

from __future__ import annotations

import datetime
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

from kubernetes import client as k8s_client

from bench.bench_tasks import ready_true
from bench.harness import CLUSTER, LOCATION, PROJECT, Stack, emulator_admin, process, wait_for

__all__ = ["run"]

GROUP, VERSION, PLURAL = "gcpcall.dev", "v1alpha1", "scheduledgcpcalls"
POOL = f"{PROJECT}.svc.id.goog"
CLUSTER_URL = (f"https://container.googleapis.com/v1/projects/{PROJECT}/locations/{LOCATION}"
               f"/clusters/{CLUSTER}")
PROJECT_NUMBER = "123456789012"
ANNOTATION = "iam.gke.io/gcp-service-account"
HOUR = 3600.0


def say(message: str) -> None:
    print(f"[p6] {message}", file=sys.stderr, flush=True)


def gsa(ksa: str) -> str:
    return f"{ksa}@{PROJECT}.iam.gserviceaccount.com"


def principal(namespace: str, ksa: str) -> str:
    return (f"principal://iam.googleapis.com/projects/{PROJECT_NUMBER}/locations/global/"
            f"workloadIdentityPools/{POOL}/subject/ns/{namespace}/sa/{ksa}")


def most_in_a_window(times: list[float], window: float) -> int:
    """The largest number of `times` that fit in any half-open window of `window` seconds."""
    ordered, best, start = sorted(times), 0, 0
    for end, t in enumerate(ordered):
        while t - ordered[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def body(name: str, ksa: str, minute: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "ScheduledGcpCall",
        "metadata": {"name": name},
        "spec": {"schedule": f"{minute} 0 1 1 *", "timeZone": "Etc/UTC",
                 "serviceAccountName": ksa,
                 "target": {"uri": "https://example.com/hook", "method": "POST"}},
    }


def run(s: Stack, objects: int = 1000, identities: int = 10, lifetime: int = 120,
        lifetimes: int = 5) -> dict[str, Any]:
    factor = HOUR / lifetime
    info = json.loads((s.work / "cp" / "info.json").read_text())
    with process([sys.executable, "-m", "gcpcall", "emulator", "--grpc-port", "0",
                  "--http-port", "0", "--require-auth", "--token-lifetime", str(lifetime),
                  "--log-level", "WARNING"], s.work / "p6-emulator.log", pipe=True) as emu:
        assert emu.stdout is not None
        ports = json.loads(emu.stdout.readline())
        http = f"http://127.0.0.1:{ports['http_port']}"

        def admin(method: str, path: str, doc: Any = None) -> Any:
            return emulator_admin(int(ports["http_port"]), method, path, doc)

        admin("POST", "/sts/trusts", {
            "audience": f"identitynamespace:{POOL}:{CLUSTER_URL}", "issuer": info["issuer"],
            "pool": POOL, "projectNumber": PROJECT_NUMBER,
            "caPem": Path(info["caFile"]).read_text()})
        ns = s.namespace("p6")
        core = k8s_client.CoreV1Api(s.api)
        ksas = [f"runner-{i}" for i in range(identities)]
        for ksa in ksas:
            core.create_namespaced_service_account(ns, k8s_client.V1ServiceAccount(
                metadata=k8s_client.V1ObjectMeta(name=ksa, annotations={ANNOTATION: gsa(ksa)})))
            admin("POST", "/iam/policy:grant", {
                "member": f"serviceAccount:{POOL}[{ns}/{ksa}]", "serviceAccount": gsa(ksa)})
        env = {
            "GCPCALL_SCHEDULER_ENDPOINT": f"127.0.0.1:{ports['grpc_port']}",
            "GCPCALL_TASKS_ENDPOINT": f"127.0.0.1:{ports['grpc_port']}",
            "GCPCALL_IDENTITY_MODE": "WorkloadIdentity",
            "GCPCALL_STS_ENDPOINT": f"{http}/v1/token",
            "GCPCALL_IAM_CREDENTIALS_ENDPOINT": http,
            "GCPCALL_WORKLOAD_POOL": POOL, "GCPCALL_CLUSTER_URL": CLUSTER_URL,
            "GCPCALL_DRIFT_CHECK_SECONDS": str(round(600 / factor, 1)),
        }
        custom = k8s_client.CustomObjectsApi(s.api)
        names = [f"call-{i:04d}" for i in range(objects)]
        owner = {name: ksas[i % identities] for i, name in enumerate(names)}
        with s.operator("p6-operator", namespaces=(ns,), **env):
            started = time.time()
            for name in names:
                custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL,
                                                       body(name, owner[name], 0))

            def ready_count() -> int:
                items = custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]
                return sum(1 for o in items if ready_true(o) and (o.get("status") or {}).get(
                    "observedGeneration") == o["metadata"]["generation"])

            # a LIST of every object per check: every 2 s, not wait_for's 0.1 s, so the
            # bench's own reads do not load the API server the operator is measured on
            wait_for(lambda: ready_count() == objects, 600, f"{objects} objects Ready",
                     interval=2.0)
            say(f"{objects} Ready after {time.time() - started:.1f} s; "
                f"busy for {lifetimes} x {lifetime} s")
            rng, edits, busy_until = random.Random(6), 0, time.time() + lifetimes * lifetime
            while time.time() < busy_until:
                for name in rng.sample(names, max(1, objects // 50)):
                    edits += 1
                    custom.patch_namespaced_custom_object(
                        GROUP, VERSION, ns, PLURAL, name,
                        {"spec": {"schedule": f"{edits % 60} 0 1 1 *"}})
                time.sleep(lifetime / 4)
            wait_for(lambda: ready_count() == objects, 600, "the last edits applied",
                     interval=2.0)
            ended = time.time()
        calls = admin("GET", "/calls")["calls"]
    return summary(calls, ns, ksas, lifetime, started, ended, objects, edits, factor)


def summary(calls: list[dict[str, Any]], ns: str, ksas: list[str], lifetime: int,
            started: float, ended: float, objects: int, edits: int,
            factor: float) -> dict[str, Any]:
    def when(call: dict[str, Any]) -> float:
        return datetime.datetime.fromisoformat(call["time"]).timestamp()

    per_identity: dict[str, dict[str, int]] = {}
    worst = 0
    for ksa in ksas:
        mine = [c for c in calls if c["principal"] == principal(ns, ksa) and c["code"] == "OK"]
        row: dict[str, int] = {}
        for method in ("ExchangeToken", "GenerateAccessToken"):
            times = [when(c) for c in mine if c["method"] == method]
            row[method] = len(times)
            row[f"{method}_most_per_lifetime"] = most_in_a_window(times, lifetime)
            worst = max(worst, row[f"{method}_most_per_lifetime"])
        per_identity[ksa] = row
    scheduler = [c for c in calls if c["service"] == "google.cloud.scheduler.v1.CloudScheduler"]
    span = ended - started
    return {
        "objects": objects, "identities": len(ksas), "token_lifetime_seconds": lifetime,
        "compression": round(factor, 1), "seconds": round(span, 1),
        "token_lifetimes": round(span / lifetime, 2), "edits": edits,
        "scheduler_calls": len(scheduler),
        "scheduler_unauthenticated": sum(1 for c in scheduler
                                         if c["code"] == "UNAUTHENTICATED"),
        "requests_per_identity": per_identity,
        "most_requests_per_identity_per_lifetime": worst,
        "mean_exchanges_per_identity_per_lifetime": round(
            sum(r["ExchangeToken"] for r in per_identity.values())
            / len(ksas) / (span / lifetime), 2),
    }
