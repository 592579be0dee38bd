"""Session fixtures: the real kube-apiserver (with etcd) for every test that needs Kubernetes.

Why the real server: CRD validation (OpenAPI and CEL), the status subresource, printer
columns and RBAC are only proven by the real thing. The server is the Go program in
`tests/controlplane`, built once per machine by `make controlplane` into `.bin/`.

The server starts lazily: unit and emulator tests that do not ask for these fixtures never
start it.

A `ControlPlane` can also be stopped and started again on the same data and port (etcd's data,
the CA, the admin token and the ServiceAccount key live in its state dir), and paused with
SIGSTOP, for tests of what clients do when the API server restarts or hangs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from gcpcall.demo import wait_for_admission

REPO = Path(__file__).resolve().parent.parent
BIN = Path(os.environ.get("GCPCALL_BIN_DIR", REPO / ".bin"))
CRDS = REPO / "crds"
FINALIZER_POLICY = REPO / "admission" / "finalizer-policy.yaml"


@dataclass
class ControlPlane:
    """A running API server: where it is and how to talk to it as the admin."""

    kubeconfig: str
    server: str
    token: str
    ca_file: str
    issuer: str
    workdir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    @property
    def state_dir(self) -> Path:
        """Where the server keeps its data (etcd, PKI, tokens, ports): reused by `start()`."""
        return self.workdir / "state"

    @property
    def port(self) -> int:
        port = urlsplit(self.server).port
        assert port is not None, self.server
        return port

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM the server (resuming it first if paused) and wait; kill it after `timeout`
        seconds. Returns its exit code. Idempotent."""
        proc = self.proc
        if proc is None:
            return 0
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)  # a stopped process cannot handle SIGTERM
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        self.proc = None
        return proc.returncode

    def start(self) -> None:
        """Start the server again on the same state dir and port (after `stop()`): the same
        cluster comes back, its objects, CA and tokens included, so existing kubeconfigs and
        ServiceAccount tokens keep working. Returns once it is ready."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("controlplane is already running; stop() it first")
        proc, info, _ = _start_controlplane(self.workdir, port=self.port, append_log=True)
        self.proc = proc
        if (info["server"], info["token"]) != (self.server, self.token):
            self.stop()
            raise RuntimeError(
                f"controlplane came back as another cluster: {info['server']} "
                f"(was {self.server}), token changed: {info['token'] != self.token}"
            )

    def restart(self) -> None:
        """`stop()` then `start()`: an API server restart on the same data and port."""
        self.stop()
        self.start()

    def pause(self) -> None:
        """SIGSTOP the server: connections stay open but nothing answers (a hung server)."""
        assert self.proc is not None, "controlplane not running"
        assert self.proc.poll() is None, "controlplane not running"
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT a paused server."""
        assert self.proc is not None, "controlplane not running"
        assert self.proc.poll() is None, "controlplane not running"
        self.proc.send_signal(signal.SIGCONT)

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run our kubectl (same version as the server) against this server."""
        proc = subprocess.run(
            [str(BIN / "kubectl"), "--kubeconfig", self.kubeconfig, *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}"
            )
        return proc


def _start_controlplane(
    workdir: Path, port: int | None = None, append_log: bool = False
) -> tuple[subprocess.Popen[bytes], dict[str, str], Path]:
    binary = BIN / "controlplane"
    if not binary.exists():
        raise pytest.UsageError(
            f"{binary.relative_to(REPO)} is missing: run `make controlplane` first"
        )
    log_path = workdir / "controlplane.log"
    cmd = [str(binary), "--dir", str(workdir / "state")]
    if port is not None:
        cmd += ["--port", str(port)]
    with log_path.open("ab" if append_log else "wb") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, start_new_session=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 180
    line = b""
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith(b"KUBECONFIG="):
            break
        if not line and proc.poll() is not None:
            raise RuntimeError(f"controlplane exited early; see {log_path}")
    else:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"controlplane not ready in 180 s; see {log_path}")
    info = json.loads((workdir / "state" / "info.json").read_text())
    return proc, info, log_path


def install_finalizer_policy(cp: ControlPlane) -> None:
    """Install admission/, as the chart does on 1.36+, and wait until the API server
    applies it (a server-side dry run of a create shows the finalizer)."""
    cp.kubectl("apply", "-f", str(FINALIZER_POLICY))
    wait_finalizer_policy(cp)


def wait_finalizer_policy(cp: ControlPlane) -> None:
    wait_for_admission(BIN / "kubectl", cp.kubeconfig)


@contextmanager
def running_controlplane(
    workdir: Path, request: pytest.FixtureRequest, apply_crds: bool = True
) -> Iterator[ControlPlane]:
    """A started API server (CRDs applied unless told not to), stopped on exit; its log is
    pointed at when tests failed meanwhile."""
    proc, info, log_path = _start_controlplane(workdir)
    cp = ControlPlane(
        kubeconfig=info["kubeconfig"],
        server=info["server"],
        token=info["token"],
        ca_file=info["caFile"],
        issuer=info["issuer"],
        workdir=workdir,
        log_path=log_path,
        proc=proc,
    )
    failed_before = request.session.testsfailed
    try:
        if apply_crds and CRDS.is_dir() and any(CRDS.glob("*.yaml")):
            cp.kubectl("apply", "--server-side", "-f", str(CRDS))
            cp.kubectl(
                "wait", "--for=condition=Established", "--timeout=60s", "crd", "--all"
            )
            install_finalizer_policy(cp)
        yield cp
    finally:
        cp.stop()
        if request.session.testsfailed > failed_before:
            print(f"\ncontrolplane log kept at {log_path}")


@pytest.fixture(scope="session")
def controlplane(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[ControlPlane]:
    with running_controlplane(tmp_path_factory.mktemp("controlplane"), request) as cp:
        yield cp


@pytest.fixture(scope="session")
def k8s(controlplane: ControlPlane) -> k8s_client.ApiClient:
    """An admin client (system:masters) for the test server."""
    return k8s_config.new_client_from_config(config_file=controlplane.kubeconfig)


@pytest.fixture
def namespace(k8s: k8s_client.ApiClient, request: pytest.FixtureRequest) -> str:
    """A fresh namespace per test (never deleted: there is no namespace controller)."""
    base = request.node.name.lower()
    cleaned = "".join(c if c.isalnum() else "-" for c in base)[:40].strip("-") or "t"
    name = f"{cleaned}-{uuid.uuid4().hex[:6]}"
    k8s_client.CoreV1Api(k8s).create_namespace(
        k8s_client.V1Namespace(metadata=k8s_client.V1ObjectMeta(name=name))
    )
    return name


def ensure_service_account(
    k8s: k8s_client.ApiClient, namespace: str, name: str, annotations: dict[str, str] | None = None
) -> None:
    core = k8s_client.CoreV1Api(k8s)
    body = k8s_client.V1ServiceAccount(
        metadata=k8s_client.V1ObjectMeta(name=name, annotations=annotations)
    )
    try:
        core.create_namespaced_service_account(namespace, body)
    except k8s_client.ApiException as e:
        if e.status != 409:
            raise


def service_account_token(
    k8s: k8s_client.ApiClient, namespace: str, name: str, audiences: list[str] | None = None
) -> str:
    core = k8s_client.CoreV1Api(k8s)
    req = k8s_client.AuthenticationV1TokenRequest(
        spec=k8s_client.V1TokenRequestSpec(audiences=audiences or [], expiration_seconds=3600)
    )
    resp = core.create_namespaced_service_account_token(name, namespace, req)
    return str(resp.status.token)


@pytest.fixture
def sa_api_client(
    k8s: k8s_client.ApiClient, controlplane: ControlPlane
) -> Callable[[str, str], k8s_client.ApiClient]:
    """A factory: an API client authenticated as a ServiceAccount, so RBAC applies."""

    def make(namespace: str, sa_name: str) -> k8s_client.ApiClient:
        ensure_service_account(k8s, namespace, sa_name)
        token = service_account_token(k8s, namespace, sa_name)
        cfg = k8s_client.Configuration()
        cfg.host = controlplane.server
        cfg.ssl_ca_cert = controlplane.ca_file
        cfg.api_key = {"authorization": token}
        cfg.api_key_prefix = {"authorization": "Bearer"}
        return k8s_client.ApiClient(cfg)

    return make


# --- the integration stack: one emulator, recording target and operator per session --------
# (shared by tests/integration and tests/reliability; the helpers are in
# tests/integration/conftest.py)


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests.integration.conftest import _start_emulator, _stop

    emu = _start_emulator(tmp_path_factory.mktemp("emulator") / "emulator.log")
    try:
        yield emu
    finally:
        _stop(emu.proc)


@pytest.fixture(scope="session")
def target(emulator: Any) -> Iterator[Any]:
    from tests.integration.conftest import OTHER_HOST, TARGET_HOST, serve_target

    with serve_target(emulator, (TARGET_HOST, OTHER_HOST)) as state:
        yield state


@pytest.fixture(scope="session")
def operator(
    controlplane: ControlPlane, emulator: Any, target: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Any]:
    from tests.integration.conftest import Operator, operator_env

    op = Operator(operator_env(controlplane, emulator),
                  tmp_path_factory.mktemp("operator") / "operator.log")
    op.start()
    try:
        yield op
    finally:
        op.stop()


@pytest.fixture(scope="session")
def sgc(k8s: k8s_client.ApiClient) -> Any:
    from tests.integration.conftest import Objects

    return Objects(k8s, "scheduledgcpcalls")


@pytest.fixture(scope="session")
def gtask(k8s: k8s_client.ApiClient) -> Any:
    from tests.integration.conftest import Objects

    return Objects(k8s, "gcptasks")
