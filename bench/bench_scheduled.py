"""ScheduledGcpCall benchmarks: P1 (apply -> Ready latency) and P3 (Google calls at rest).

P1 compares the operator with the bare floor (`bare_scheduled.py`) in the same run, on the
same API server and emulator: the ratio of median apply -> Ready=True latencies over N
objects created one after another. P3 counts every Cloud Scheduler call the emulator serves
while N synced objects sit idle (no run due) with the default sync settings, per object-hour.
"""

from __future__ import annotations

import datetime
import statistics
import sys
import time
from typing import Any

from kubernetes import client as k8s_client
from kubernetes import watch

from bench.harness import LOCATION, PROJECT, REPO, Stack, process, wait_for

GROUP, VERSION, PLURAL = "gcpcall.dev", "v1alpha1", "scheduledgcpcalls"


def body(name: str, schedule: str = "0 0 1 1 *") -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "ScheduledGcpCall",
        "metadata": {"name": name},
        "spec": {
            "schedule": schedule, "timeZone": "Etc/UTC",
            "target": {"uri": "https://example.com/hook", "method": "POST"},
        },
    }


def _ready(obj: dict[str, Any]) -> bool:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready" and cond.get("status") == "True":
            return True
    return False


def apply_to_ready(stack: Stack, namespace: str, n: int, prefix: str = "o") -> list[float]:
    """Seconds from create to a watch event with Ready=True, one object at a time."""
    api = k8s_client.CustomObjectsApi(stack.api)
    latencies = []
    for i in range(n):
        name = f"{prefix}{i}"
        w = watch.Watch()
        stream = w.stream(api.list_namespaced_custom_object, GROUP, VERSION, namespace,
                          PLURAL, field_selector=f"metadata.name={name}", timeout_seconds=60)
        start = time.perf_counter()
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body(name))
        for event in stream:
            if _ready(event["object"]):
                latencies.append(time.perf_counter() - start)
                w.stop()
                break
        else:
            raise RuntimeError(f"{name} never became Ready")
    return latencies


def p1(stack: Stack, n: int) -> dict[str, float]:
    """The operator and the bare floor run side by side, each on its own namespace, and the
    objects alternate between them, so both sides meet the same machine (the same load,
    the same warm caches) and drift during the run cannot favour either."""
    ns_op, ns_bare = stack.namespace("p1-operator"), stack.namespace("p1-bare")
    with stack.operator("p1-operator", namespaces=(ns_op,)):
        # operator startup (login, CRD scan, watch); by then the new CRD's storage is up,
        # which the bare floor's single watch request needs
        time.sleep(3)
        with process([sys.executable, str(REPO / "bench" / "bare_scheduled.py"), ns_bare,
                      stack.grpc_target, f"projects/{PROJECT}/locations/{LOCATION}"],
                     stack.work / "bare.log", env=stack.operator_env(), pipe=True) as bare:
            assert bare.stdout is not None
            bare.stdout.readline()
            time.sleep(1)
            # warm-up (first gRPC connections, imports, caches)
            apply_to_ready(stack, ns_op, 3, "warm")
            apply_to_ready(stack, ns_bare, 3, "warm")
            op: list[float] = []
            floor: list[float] = []
            for i in range(n):
                op += apply_to_ready(stack, ns_op, 1, f"o{i}-")
                floor += apply_to_ready(stack, ns_bare, 1, f"o{i}-")
    return {
        "operator_median_ms": statistics.median(op) * 1000,
        "floor_median_ms": statistics.median(floor) * 1000,
        "ratio": statistics.median(op) / statistics.median(floor),
    }


def p3(stack: Stack, n: int, window: float) -> dict[str, float]:
    ns = stack.namespace("p3")
    api = k8s_client.CustomObjectsApi(stack.api)
    # Its own namespace only: run after p1, a cluster-wide operator would adopt p1's
    # objects too, and the bare floor's (whose jobs it names otherwise, so its drift check
    # would create their jobs inside the window).
    with stack.operator("p3-operator", namespaces=(ns,)):
        for i in range(n):
            api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body(f"idle-{i}"))

        def all_ready() -> bool:
            items = api.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]
            return len(items) == n and all(_ready(o) for o in items)

        wait_for(all_ready, timeout=max(600.0, n * 1.0), what=f"{n} objects Ready")
        stack.admin("DELETE", "/calls")
        time.sleep(window)
        calls = [c for c in stack.calls() if c["service"].endswith("CloudScheduler")]
    per_object_hour = len(calls) / n / (window / 3600.0)
    methods: dict[str, int] = {}
    for c in calls:
        methods[c["method"]] = methods.get(c["method"], 0) + 1
    return {"objects": n, "window_s": window, "calls": len(calls),
            "calls_per_object_hour": per_object_hour,
            **{f"calls_{k}": v for k, v in methods.items()}}




def p7(stack: Stack, runs: int) -> dict[str, float]:
    """Seconds from a run's scheduled time to `status.lastRun` showing it, default settings.

    One object on `* * * * *`; the emulator fires it at each minute (real clock); we watch
    the object and note when a new `lastRun.attemptTime` appears.
    """
    ns = stack.namespace("p7")
    api = k8s_client.CustomObjectsApi(stack.api)
    latencies: list[float] = []
    with stack.operator("p7-operator"):
        api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL,
                                            body("every-minute", "* * * * *"))
        seen: set[str] = set()
        w = watch.Watch()
        deadline = time.time() + 70 * (runs + 1)
        for event in w.stream(api.list_namespaced_custom_object, GROUP, VERSION, ns, PLURAL,
                              timeout_seconds=int(70 * (runs + 1))):
            last = ((event["object"].get("status") or {}).get("lastRun") or {})
            attempt = last.get("attemptTime")
            if attempt and attempt not in seen:
                seen.add(attempt)
                scheduled = last.get("scheduleTime") or attempt
                when = datetime.datetime.fromisoformat(scheduled.replace("Z", "+00:00"))
                latencies.append(time.time() - when.timestamp())
                if len(latencies) >= runs:
                    w.stop()
                    break
            if time.time() > deadline:
                break
    return {"runs": len(latencies), "median_s": statistics.median(latencies),
            "max_s": max(latencies)}
