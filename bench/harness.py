"""The benchmark stack: the real API server, the emulator and the operator as processes.

Why processes and one machine: every figure in RESULTS.md is a ratio of two things measured
in the same run on the same stack (our operator against a bare baseline), so machine noise
affects both sides alike.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from gcpcall.demo import process, wait_for_admission

REPO = Path(__file__).resolve().parent.parent
BIN = REPO / ".bin"
PROJECT, LOCATION, CLUSTER = "bench-project", "us-central1", "bench"
GROUP, VERSION = "gcpcall.dev", "v1alpha1"


def call(name: str, project: str | None = None) -> dict[str, Any]:
    """A ScheduledGcpCall that never falls due (in `project`, else the namespace's): the
    chaos and outage benches' object."""
    spec: dict[str, Any] = {"schedule": "0 0 1 1 *", "timeZone": "Etc/UTC",
                            "target": {"uri": "https://example.com/hook", "method": "POST"}}
    if project is not None:
        spec["project"] = project
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ScheduledGcpCall",
            "metadata": {"name": name}, "spec": spec}


def wait_for(predicate: Callable[[], Any], timeout: float, what: str,
             interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise RuntimeError(f"timed out waiting for {what}")


def emulator_admin(http_port: int, method: str, path: str, body: Any = None) -> Any:
    """One call to an emulator's admin API (JSON in and out)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        f"http://127.0.0.1:{http_port}/emulator/v1{path}", data=data, method=method,
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None


@dataclass
class Stack:
    work: Path
    kubeconfig: str
    grpc_port: int
    http_port: int
    api: k8s_client.ApiClient
    exits: ExitStack
    controlplane_pid: int

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        return emulator_admin(self.http_port, method, path, body)

    def calls(self) -> list[dict[str, Any]]:
        return list(self.admin("GET", "/calls")["calls"])

    def operator_env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GCPCALL_")}
        env.update(
            KUBECONFIG=self.kubeconfig, GCPCALL_CLUSTER_NAME=CLUSTER, GCPCALL_PROJECT=PROJECT,
            GCPCALL_LOCATION=LOCATION, GCPCALL_IDENTITY_MODE="Operator",
            GCPCALL_SCHEDULER_ENDPOINT=self.grpc_target, GCPCALL_TASKS_ENDPOINT=self.grpc_target,
            GCPCALL_GRPC_INSECURE="true", PYTHONUNBUFFERED="1",
        )
        env.update(extra)
        return env

    @contextmanager
    def operator(self, name: str = "operator", namespaces: tuple[str, ...] = (),
                 **env: str) -> Iterator[subprocess.Popen[bytes]]:
        cmd = os.environ.get("BENCH_OPERATOR_CMD")
        args = cmd.split() if cmd else [sys.executable, "-m", "gcpcall", "run",
                                        "--metrics-port", "0", "--liveness", ""]
        for ns in namespaces:
            args += ["--namespace", ns]
        with process(args, self.work / f"{name}.log",
                     env=self.operator_env(**env)) as proc:
            yield proc

    def namespace(self, name: str) -> str:
        k8s_client.CoreV1Api(self.api).create_namespace(
            k8s_client.V1Namespace(metadata=k8s_client.V1ObjectMeta(name=name)))
        return name


@contextmanager
def stack() -> Iterator[Stack]:
    if not (BIN / "controlplane").exists():
        raise SystemExit("bench: run `make controlplane` first")
    work = Path(tempfile.mkdtemp(prefix="gcpcall-bench-"))
    with ExitStack() as exits:
        cp = exits.enter_context(process([str(BIN / "controlplane"), "--dir", str(work / "cp")],
                                         work / "controlplane.log", pipe=True))
        assert cp.stdout is not None
        line = cp.stdout.readline().decode()
        if not line.startswith("KUBECONFIG="):
            raise SystemExit(f"bench: API server did not start; see {work}")
        kubeconfig = line.strip().split("=", 1)[1]
        subprocess.run([str(BIN / "kubectl"), "--kubeconfig", kubeconfig, "apply",
                        "--server-side", "-f", str(REPO / "crds")], check=True,
                       capture_output=True)
        subprocess.run([str(BIN / "kubectl"), "--kubeconfig", kubeconfig, "wait",
                        "--for=condition=Established", "crd", "--all"], check=True,
                       capture_output=True)
        # as the chart installs it on Kubernetes 1.36+: the finalizer added at create
        subprocess.run([str(BIN / "kubectl"), "--kubeconfig", kubeconfig, "apply", "-f",
                        str(REPO / "admission")], check=True, capture_output=True)
        wait_for_admission(BIN / "kubectl", kubeconfig)
        emu = exits.enter_context(process(
            [sys.executable, "-m", "gcpcall", "emulator", "--grpc-port", "0",
             "--http-port", "0", "--log-level", "WARNING"], work / "emulator.log", pipe=True))
        assert emu.stdout is not None
        ports = json.loads(emu.stdout.readline())
        api = k8s_config.new_client_from_config(config_file=kubeconfig)
        yield Stack(work, kubeconfig, int(ports["grpc_port"]), int(ports["http_port"]), api,
                    exits, cp.pid)
