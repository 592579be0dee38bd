"""Integration helpers: the emulator and the operator as real processes, a recording target.

The session fixtures built from these (`emulator`, `target`, `operator`, `sgc`, `gtask`)
live in tests/conftest.py, so the integration and the reliability suites share one
instance of each: two session operators on one API server would both handle every object.

Why processes: the integration suite proves the operator as users run it (`gcpcall-operator
run`), against the real API server and the emulator's real gRPC/HTTP protocols. Tests talk
to the emulator only through the official Google clients and its admin HTTP API.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from google.auth.credentials import AnonymousCredentials
from google.cloud import scheduler_v1, tasks_v2
from google.cloud.scheduler_v1.services.cloud_scheduler.transports import (
    CloudSchedulerGrpcTransport,
)
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport
from kubernetes import client as k8s_client

if TYPE_CHECKING:
    from tests.conftest import ControlPlane

PROJECT = "test-project"
LOCATION = "us-central1"
CLUSTER = "itest"
TARGET_HOST = "target.googleapis.com"  # routed by the emulator's host map to the recorder
OTHER_HOST = "example.com"  # a non-Google host, also routed to the recorder


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2,
             what: str = "condition") -> Any:
    """Poll until `predicate()` is truthy; its value is returned. Fails with `what`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last value: {last!r}")


# --- emulator ------------------------------------------------------------------------------


@dataclass
class Emulator:
    grpc_port: int
    http_port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"{self.http_url}/emulator/v1{path}", data=data, method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def calls(self, method: str | None = None) -> list[dict[str, Any]]:
        query = f"?method={method}" if method else ""
        return list(self.admin("GET", f"/calls{query}")["calls"])

    def writes(self) -> list[dict[str, Any]]:
        """Scheduler/Tasks calls that change something (everything but Get/List)."""
        return [c for c in self.calls() if not c["method"].startswith(("Get", "List"))]

    def fault(self, method: str, code: str, rate: float = 1.0) -> None:
        self.admin("POST", "/faults", {"method": method, "code": code, "rate": rate})

    def slow(self, method: str, seconds: float) -> None:
        """Every `method` call takes `seconds` longer, and none fails."""
        self.admin("POST", "/faults", {"method": method, "code": "UNAVAILABLE", "rate": 0.0,
                                       "latency_seconds": seconds})

    def clear_faults(self) -> None:
        self.admin("DELETE", "/faults")

    def scheduler(self) -> scheduler_v1.CloudSchedulerClient:
        channel = grpc.insecure_channel(self.grpc_target)
        return scheduler_v1.CloudSchedulerClient(
            transport=CloudSchedulerGrpcTransport(
                channel=channel, credentials=AnonymousCredentials()
            )
        )

    def tasks(self) -> tasks_v2.CloudTasksClient:
        channel = grpc.insecure_channel(self.grpc_target)
        return tasks_v2.CloudTasksClient(
            transport=CloudTasksGrpcTransport(channel=channel, credentials=AnonymousCredentials())
        )


def _start_emulator(log_path: Path) -> Emulator:
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gcpcall", "emulator", "--grpc-port", "0", "--http-port", "0"],
        stdout=subprocess.PIPE, stderr=log, start_new_session=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"emulator did not start; see {log_path}")
    ports = json.loads(line)
    return Emulator(int(ports["grpc_port"]), int(ports["http_port"]), proc, log_path)


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- the recording target --------------------------------------------------------------------


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Target:
    """A local HTTP server the emulator dispatches to; answers scripted status codes."""

    port: int
    requests: list[Recorded] = field(default_factory=list)
    script: dict[str, list[int]] = field(default_factory=dict)  # path prefix -> codes
    delays: dict[str, float] = field(default_factory=dict)  # path prefix -> seconds
    lock: threading.Lock = field(default_factory=threading.Lock)

    def delay(self, path_prefix: str, seconds: float) -> None:
        """Answer requests under `path_prefix` only after `seconds` (a slow target)."""
        with self.lock:
            self.delays[path_prefix] = seconds

    def delay_of(self, path: str) -> float:
        with self.lock:
            return next((d for p, d in self.delays.items() if path.startswith(p)), 0.0)

    def answer(self, path_prefix: str, *codes: int) -> None:
        """The next requests under `path_prefix` get these codes (then 200)."""
        with self.lock:
            self.script[path_prefix] = list(codes)

    def next_code(self, path: str) -> int:
        with self.lock:
            for prefix, codes in self.script.items():
                if path.startswith(prefix) and codes:
                    return codes.pop(0)
        return 200

    def paths(self) -> list[str]:
        with self.lock:
            return [r.path for r in self.requests]

    def received(self, path_prefix: str) -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests if r.path.startswith(path_prefix)]


@contextmanager
def serve_target(emulator: Emulator, hosts: Iterable[str]) -> Iterator[Target]:
    """Start a recording target and route `hosts` to it in the emulator's host map."""
    state = Target(port=0)

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            with state.lock:
                state.requests.append(
                    Recorded(self.command, self.path, dict(self.headers.items()), body)
                )
            code = state.next_code(self.path)
            pause = state.delay_of(self.path)
            if pause:
                time.sleep(pause)
            payload = json.dumps({"ok": code < 300}).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    for host in hosts:
        emulator.admin("PUT", "/hostmap",
                       {"host": host, "base_url": f"http://127.0.0.1:{state.port}"})
    try:
        yield state
    finally:
        server.shutdown()


# --- the operator ------------------------------------------------------------------------------


@dataclass
class Operator:
    """The operator as a process; `restart()` and `kill()` for crash and restart stories."""

    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    args: tuple[str, ...] = ()  # extra `gcpcall-operator run` flags, e.g. --namespace

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gcpcall", "run", "--metrics-port", "0", "--liveness", "",
             *self.args],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def instead_of(session: Operator, *mine: Operator, start: bool = True) -> Iterator[None]:
    """Run `mine` instead of the session's operator: never two operators on one namespace,
    and objects other tests left behind must not blur a test's counts. The session's is
    stopped first and started again once `mine` have stopped. `start=False`: the test
    starts them itself."""
    session.stop()
    try:
        if start:
            for op in mine:
                op.start()
        yield
    finally:
        for op in mine:
            op.stop()
        session.start()


def own_operator_for(controlplane: ControlPlane, emulator: Emulator, log_path: Path,
                     namespace: str, *args: str, **env: str) -> Operator:
    """An operator of a test's own, watching only `namespace` (start it with `instead_of`)."""
    return Operator(operator_env(controlplane, emulator, **env), log_path,
                    args=("--namespace", namespace, *args))


def operator_env(controlplane: ControlPlane, emulator: Emulator, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GCPCALL_")}
    env.update(
        KUBECONFIG=controlplane.kubeconfig,
        GCPCALL_CLUSTER_NAME=CLUSTER,
        GCPCALL_PROJECT=PROJECT,
        GCPCALL_LOCATION=LOCATION,
        GCPCALL_IDENTITY_MODE="Operator",
        GCPCALL_SCHEDULER_ENDPOINT=emulator.grpc_target,
        GCPCALL_TASKS_ENDPOINT=emulator.grpc_target,
        GCPCALL_GRPC_INSECURE="true",
        GCPCALL_OIDC_CERTS_URL=f"{emulator.http_url}/oauth2/v1/certs",
        # short cadences so that "within one sync" is seconds in tests
        GCPCALL_DRIFT_CHECK_SECONDS="3",
        GCPCALL_RUN_SETTLE_SECONDS="1",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


# --- Kubernetes helpers ------------------------------------------------------------------------


class Objects:
    """CRUD of our custom objects through the admin client."""

    def __init__(self, api: k8s_client.ApiClient, plural: str) -> None:
        self.api = k8s_client.CustomObjectsApi(api)
        self.plural = plural

    def create(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self.api.create_namespaced_custom_object(
            "gcpcall.dev", "v1alpha1", namespace, self.plural, body))

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return dict(self.api.get_namespaced_custom_object(
                "gcpcall.dev", "v1alpha1", namespace, self.plural, name))
        except k8s_client.ApiException as e:
            if e.status == 404:
                return None
            raise

    def patch(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return dict(self.api.patch_namespaced_custom_object(
            "gcpcall.dev", "v1alpha1", namespace, self.plural, name, patch))

    def delete(self, namespace: str, name: str) -> None:
        try:
            self.api.delete_namespaced_custom_object(
                "gcpcall.dev", "v1alpha1", namespace, self.plural, name)
        except k8s_client.ApiException as e:
            if e.status != 404:
                raise


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return {}


def events_for(k8s: k8s_client.ApiClient, namespace: str, name: str) -> list[dict[str, Any]]:
    evs = k8s_client.CoreV1Api(k8s).list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name}")
    return [{"reason": e.reason, "type": e.type, "message": e.message} for e in evs.items]
