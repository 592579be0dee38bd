"""R3 and R7 at the size targets.md names; CI runs them smaller in `tests/reliability/`
(`test_apiserver_outages.py`, `test_leader_failover.py`).

Why a bench as well as the tests: the tests prove the behaviour on a few dozen objects; this
measures it under a create storm of `--r3-calls` / `--r7-calls` objects and prints the
figures RESULTS.md records. The objects are spread over ten projects so that Cloud
Scheduler's write quota (500 a minute per project, which the operator keeps to) does not
set the pace: what is measured is the outage.

- R3: on an API server of its own (the stack's is shared with the other parts): a storm
  with no outage (the baseline); a storm with the API server hung (SIGSTOP) for
  `--r3-short` seconds (the issue's "a few seconds": its cost beyond the outage, goal 10 s);
  a storm with it hung for `--r3-hang` seconds (30); a storm with it stopped and started
  again on the same data and port. After each outage: an object created then is Ready
  within 5 s, a spec edit is applied; the operator never restarts, never leaves a retry to
  kopf's 60-second default, and makes no Google write twice.
- R7: two replicas with the chart's lease timings (15 s lease, 10 s renew, 2 s retry); the
  leader SIGKILLed two seconds into a storm: the seconds until the standby holds the Lease
  (goal: within the lease duration, plus one retry), until an object created then is Ready
  (goal 20 s), until the storm is all Ready; every job created once.

    python -m bench chaos --chaos-parts r3,r7 [--r3-calls 500] [--r7-calls 500]
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from bench.harness import BIN, GROUP, PROJECT, REPO, VERSION, Stack, call, wait_for
from gcpcall.demo import wait_for_admission

__all__ = ["r3", "r7"]

PLURAL = "scheduledgcpcalls"

PROJECTS = 10
WRITES = ("CreateJob", "UpdateJob", "DeleteJob", "PauseJob", "ResumeJob", "RunJob")


def _call(name: str, i: int) -> dict[str, Any]:
    return call(name, f"{PROJECT}-{i % PROJECTS}")


class _ApiServer:
    """The test API server as a process of our own, restartable on the same data and port
    (it keeps its PKI and tokens in `--dir`)."""

    def __init__(self, work: Path) -> None:
        self.dir = work / "r3-controlplane"
        self.log = work / "r3-controlplane.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port: int | None = None
        self.kubeconfig = ""

    def start(self) -> None:
        cmd = [str(BIN / "controlplane"), "--dir", str(self.dir)]
        if self.port is not None:
            cmd += ["--port", str(self.port)]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log,
                                         start_new_session=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if not line.startswith("KUBECONFIG="):
            raise RuntimeError(f"R3: the API server did not start; see {self.log}")
        self.kubeconfig = line.strip().split("=", 1)[1]
        info = json.loads((self.dir / "info.json").read_text())
        self.port = int(info["server"].rsplit(":", 1)[1])

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGCONT)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kubectl(self, *args: str) -> None:
        subprocess.run([str(BIN / "kubectl"), "--kubeconfig", self.kubeconfig, *args],
                       check=True, capture_output=True)

    def serving(self) -> None:
        """Until creates of our kinds are admitted again (with the finalizer policy)."""
        wait_for_admission(BIN / "kubectl", self.kubeconfig)


@contextmanager
def _own_api_server(s: Stack) -> Iterator[_ApiServer]:
    server = _ApiServer(s.work)
    server.start()
    try:
        server.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        server.kubectl("wait", "--for=condition=Established", "crd", "--all")
        server.kubectl("apply", "-f", str(REPO / "admission"))
        server.serving()
        yield server
    finally:
        server.stop()


class _Objects:
    """ScheduledGcpCalls of one namespace; a call made while the API server is away is
    retried, as `kubectl apply` in a loop would be."""

    def __init__(self, api: k8s_client.ApiClient, namespace: str) -> None:
        self.api = k8s_client.CustomObjectsApi(api)
        self.ns = namespace

    def _retried(self, what: Callable[[], Any]) -> Any:
        deadline = time.monotonic() + 300
        while True:
            try:
                return what()
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def create(self, body: dict[str, Any]) -> None:
        def once() -> None:
            try:
                self.api.create_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, body)
            except k8s_client.ApiException as e:
                if e.status != 409:  # created by an earlier try whose answer was lost
                    raise
        self._retried(once)

    def patch(self, name: str, body: dict[str, Any]) -> None:
        self._retried(lambda: self.api.patch_namespaced_custom_object(
            GROUP, VERSION, self.ns, PLURAL, name, body))

    def settled(self) -> set[str]:
        """Names of the objects Ready=True/UpToDate at their current generation."""
        try:
            listed = self.api.list_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL,
                                                            _request_timeout=10)
        except Exception:
            return set()
        out = set()
        for o in listed["items"]:
            status = o.get("status") or {}
            ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                        and c.get("reason") == "UpToDate" for c in status.get("conditions") or [])
            if ready and status.get("observedGeneration") == o["metadata"].get("generation"):
                out.add(o["metadata"]["name"])
        return out

    def until_settled(self, names: list[str], timeout: float, what: str) -> float:
        started = time.monotonic()
        wait_for(lambda: set(names) <= self.settled(), timeout, what, interval=0.25)
        return round(time.monotonic() - started, 1)


def _storm(objects: _Objects, prefix: str, count: int) -> tuple[list[str], threading.Thread]:
    names = [f"{prefix}-{i:04d}" for i in range(count)]

    def create_all() -> None:
        for i, name in enumerate(names):
            objects.create(_call(name, i))

    thread = threading.Thread(target=create_all)
    thread.start()
    return names, thread


def _writes(s: Stack, since: int) -> Counter[str]:
    return Counter(c["method"] for c in s.calls()[since:]
                   if c["service"].endswith("CloudScheduler") and c["method"] in WRITES
                   and c["code"] == "OK")


def _after_recovery(objects: _Objects, prefix: str, edit: str
                    ) -> tuple[str, dict[str, float]]:
    """An object created now, and a spec edit of one made before: its name, and the
    seconds until each is Ready (the goal for the new one: 5 s)."""
    new = f"{prefix}-after"
    objects.create(_call(new, 0))
    new_s = objects.until_settled([new], 120, f"R3 {new} Ready")
    objects.patch(edit, {"spec": {"description": f"edited after {prefix}"}})
    edit_s = objects.until_settled([edit], 120, f"R3 edit of {edit} applied")
    return new, {"new_object_ready_s": new_s, "spec_edit_applied_s": edit_s}


def r3(s: Stack, count: int = 500, short: float = 3.0, hang: float = 30.0) -> dict[str, Any]:
    out: dict[str, Any] = {"objects_per_storm": count, "projects": PROJECTS}
    with _own_api_server(s) as server:
        api = k8s_config.new_client_from_config(config_file=server.kubeconfig)
        k8s_client.CoreV1Api(api).create_namespace(
            k8s_client.V1Namespace(metadata=k8s_client.V1ObjectMeta(name="r3")))
        objects = _Objects(api, "r3")
        since = len(s.calls())
        with s.operator("chaos-r3", namespaces=("r3",), KUBECONFIG=server.kubeconfig) as proc:
            # the baseline: the same storm with no outage
            names, creating = _storm(objects, "base", count)
            started = time.monotonic()
            creating.join()
            objects.until_settled(names, 600, "R3 baseline storm")
            out["baseline_storm_s"] = round(time.monotonic() - started, 1)
            every = list(names)

            for label, outage in (("short_hang", short), ("hang", hang), ("restart", 0.0)):
                prefix = label.replace("_", "-")  # a Kubernetes name
                names, creating = _storm(objects, prefix, count)
                started = time.monotonic()
                time.sleep(2.0)  # into the storm; pacing, not a measurement
                if label == "restart":
                    down = time.monotonic()
                    server.stop()
                    server.start()
                    outage = time.monotonic() - down
                else:
                    server.signal(signal.SIGSTOP)
                    time.sleep(outage)  # the outage itself
                    server.signal(signal.SIGCONT)
                back = time.monotonic()
                server.serving()
                creating.join()
                objects.until_settled(names, 900, f"R3 {label} storm")
                done = time.monotonic()
                new, after = _after_recovery(objects, prefix, names[0])
                every += [*names, new]
                out[label] = {
                    "outage_s": round(outage, 1),
                    "storm_s": round(done - started, 1),
                    "cost_beyond_outage_s": round(done - started - outage
                                                  - out["baseline_storm_s"], 1),
                    "ready_after_recovery_s": round(done - back, 1),
                    **after,
                }
            objects.until_settled(every, 300, "R3 every object Ready at the end")
            out["operator_restarted"] = proc.poll() is not None
        log = (s.work / "chaos-r3.log").read_text(errors="replace")
    writes = _writes(s, since)
    out["scheduler_writes"] = dict(writes)
    out["left_to_kopf_60s"] = log.count("will try again in 60")
    out["tracebacks"] = log.count("Traceback")
    out["passed"] = (not out["operator_restarted"] and out["left_to_kopf_60s"] == 0
                     and writes["CreateJob"] == len(every)  # each job once
                     and writes["DeleteJob"] == 0
                     and out["short_hang"]["cost_beyond_outage_s"] <= 10.0
                     and all(out[k]["new_object_ready_s"] <= 5.0
                             for k in ("short_hang", "hang", "restart")))
    return out


LEASE = "bench-r7"


def _holder(api: k8s_client.ApiClient, namespace: str) -> str:
    try:
        lease = k8s_client.CoordinationV1Api(api).read_namespaced_lease(LEASE, namespace)
    except k8s_client.ApiException:
        return ""
    return str(lease.spec.holder_identity or "")


def r7(s: Stack, count: int = 500) -> dict[str, Any]:
    ns = s.namespace("chaos-r7")
    objects = _Objects(s.api, ns)
    env = {"GCPCALL_LEADER_ELECTION": "true", "GCPCALL_LEASE_NAME": LEASE,
           "GCPCALL_LEASE_NAMESPACE": ns}  # the chart's timings: 15 s, 10 s, 2 s
    since = len(s.calls())
    out: dict[str, Any] = {"objects": count, "projects": PROJECTS, "lease_seconds": 15.0}
    with s.operator("chaos-r7-b", namespaces=(ns,), HOSTNAME="r7-b", **env) as b:
        wait_for(lambda: _holder(s.api, ns).startswith("r7-b_"), 60, "R7: b leads")
        with s.operator("chaos-r7-a", namespaces=(ns,), HOSTNAME="r7-a", **env):
            wait_for(lambda: "waiting for the lease" in (s.work / "chaos-r7-a.log").read_text(),
                     60, "R7: a stands by")
            names, creating = _storm(objects, "r7", count)
            time.sleep(2.0)  # into the storm; pacing, not a measurement
            b.kill()  # SIGKILL: no release; the standby waits the lease out
            killed = time.monotonic()
            wait_for(lambda: _holder(s.api, ns).startswith("r7-a_"), 60, "R7: a leads",
                     interval=0.1)
            out["standby_leads_after_s"] = round(time.monotonic() - killed, 1)
            took_over = time.monotonic()
            objects.create(_call("r7-after-kill", 0))
            objects.until_settled(["r7-after-kill"], 120, "R7: the new object Ready")
            out["new_object_ready_after_takeover_s"] = round(time.monotonic() - took_over, 1)
            creating.join()
            objects.until_settled(names, 600, "R7: the storm Ready")
            out["storm_ready_after_kill_s"] = round(time.monotonic() - killed, 1)
    writes = _writes(s, since)
    out["scheduler_writes"] = dict(writes)
    out["passed"] = (out["standby_leads_after_s"] <= 15.0 + 2.0
                     and out["new_object_ready_after_takeover_s"] <= 20.0
                     and writes == Counter({"CreateJob": count + 1}))  # each job once
    return out
