"""`gcpcall-operator demo` (`make demo`): the whole product on one machine, in a minute.

Why a demo command: a new user (or reviewer) should see a ScheduledGcpCall become a Cloud
Scheduler job, run, and report its result without a Google project. It starts the real
Kubernetes API server built by `make controlplane`, the local Google Cloud emulator (with
its stand-ins for Compute and Dataflow, answering as those APIs do), and the operator with
its relay; applies `examples/`; runs the MIG resize (followed to the end of its operation)
and the Dataflow launch; and prints what `kubectl` shows. `--keep` leaves it all running.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

__all__ = ["main", "process", "wait_for_admission"]

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "demo"


_PROBES = (
    {"kind": "ScheduledGcpCall",
     "spec": {"schedule": "5 * * * *", "target": {"uri": "https://example.com/probe"}}},
    {"kind": "GcpTask", "spec": {"queue": "probe", "target": {"uri": "https://example.com/p"}}},
)


def wait_for_admission(kubectl: str | Path, kubeconfig: str, within: float = 60.0) -> None:
    """Until the API server applies admission/finalizer-policy.yaml to both our kinds.

    For a few seconds after the policy is installed, the API server answers creates of
    the new kinds with 503 "Resource kind ... not found", and a little before that it
    creates them without the finalizer. A server-side dry run of each kind tells both.
    Used by the demo, the benchmarks and the tests, which all install the policy.
    """
    deadline = time.monotonic() + within
    for probe in _PROBES:
        doc = json.dumps({"apiVersion": "gcpcall.dev/v1alpha1",
                          "metadata": {"name": "probe", "namespace": "default"}, **probe})
        while True:
            out = subprocess.run([str(kubectl), "--kubeconfig", kubeconfig, "create",
                                  "--dry-run=server", "-o", "json", "-f", "-"], input=doc,
                                 capture_output=True, text=True, check=False)
            if out.returncode == 0 and "gcpcall.dev/finalizer" in (
                json.loads(out.stdout)["metadata"].get("finalizers") or []
            ):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the API server did not apply the finalizer policy to "
                                   f"{probe['kind']} within {within:.0f} s: {out.stderr}")
            time.sleep(0.2)


def _say(text: str) -> None:
    print(f"\n== {text}", flush=True)


@contextmanager
def process(args: list[str], log: Path, env: dict[str, str] | None = None,
            pipe: bool = False) -> Iterator[subprocess.Popen[bytes]]:
    """A child process logging to `log` (stdout piped instead with `pipe`), stopped with
    SIGTERM, then SIGKILL, on exit. The demo's and the benchmarks' stacks use it."""
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            args, env=env, stdout=subprocess.PIPE if pipe else sink, stderr=sink,
            start_new_session=True,
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()


def _wait(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise SystemExit(f"demo: timed out waiting for {what}")


# What the examples call, declared in the emulator's Google APIs stand-in (they would be
# real resources in a real project): the MIG the resize targets, the Cloud Armor policy,
# the Dataflow template (its jobs stay active a minute, so a reused name meets the 409).
_DECLARATIONS = {
    "compute": {
        "instance_group_managers": [{"project": "demo-project", "zone": "europe-west3-a",
                                     "name": "web", "target_size": 2,
                                     "done_after_seconds": 3}],
        "security_policies": [{"project": "demo-project", "name": "edge",
                               "rules": [{"priority": 1000, "action": "deny(403)",
                                          "match": {"versionedExpr": "SRC_IPS_V1",
                                                    "config": {"srcIpRanges":
                                                               ["198.51.100.0/24"]}}}]}],
    },
    "dataflow": {"templates": [{"gcs_path": "gs://dataflow-templates/latest/Word_Count",
                                "done_after_seconds": 60}]},
}
_GSA = "demo-operator@demo-project.iam.gserviceaccount.com"
_RELAY_HOST = "relay.demo.gcpcall.test"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _make_queue(grpc_target: str, queue: str) -> None:
    """The queue a GcpTask names must exist; in Google Cloud the platform team makes it."""
    import grpc
    from google.cloud import tasks_v2
    from google.cloud.tasks_v2.services.cloud_tasks.transports import (
        CloudTasksGrpcTransport,
    )

    client = tasks_v2.CloudTasksClient(
        transport=CloudTasksGrpcTransport(channel=grpc.insecure_channel(grpc_target)))
    parent = "projects/demo-project/locations/europe-west3"
    client.create_queue(parent=parent, queue=tasks_v2.Queue(name=f"{parent}/queues/{queue}"))


def _admin(http: str, method: str, path: str, body: Any) -> Any:
    req = urllib.request.Request(  # noqa: S310 - the loopback emulator's admin API
        f"{http}/emulator/v1{path}", data=json.dumps(body).encode(), method=method,
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - loopback emulator
        return json.loads(resp.read() or b"null")


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="gcpcall-operator demo")
    parser.add_argument("--bin", default=str(REPO / ".bin"),
                        help="where `make controlplane` put its binaries")
    parser.add_argument("--keep", action="store_true",
                        help="leave everything running until Ctrl-C")
    args = parser.parse_args(list(argv))
    bin_dir = Path(args.bin)
    if not (bin_dir / "controlplane").exists():
        raise SystemExit("demo: the test API server is not built; run `make controlplane`")
    work = Path(tempfile.mkdtemp(prefix="gcpcall-demo-"))
    kubectl_bin = str(bin_dir / "kubectl")

    with ExitStack() as stack:
        _say("starting the Kubernetes API server (kube-apiserver + etcd, on 127.0.0.1)")
        cp = stack.enter_context(process(
            [str(bin_dir / "controlplane"), "--dir", str(work / "cp")],
            work / "controlplane.log", pipe=True))
        assert cp.stdout is not None
        line = cp.stdout.readline().decode()
        if not line.startswith("KUBECONFIG="):
            raise SystemExit(f"demo: the API server did not start; see {work}/controlplane.log")
        kubeconfig = line.strip().split("=", 1)[1]

        def kubectl(*kargs: str, check: bool = True) -> str:
            proc = subprocess.run([kubectl_bin, "--kubeconfig", kubeconfig, *kargs],
                                  capture_output=True, text=True, check=False)
            if check and proc.returncode != 0:
                raise SystemExit(f"demo: kubectl {' '.join(kargs)}: {proc.stderr}")
            return proc.stdout

        kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        kubectl("apply", "-f", str(REPO / "admission"))  # as the chart does on 1.36+

        _say("starting the local Google Cloud emulator (Cloud Scheduler, Cloud Tasks, IAM, "
             "and stand-ins for Compute and Dataflow)")
        relay_port = _free_port()
        emu = stack.enter_context(process(
            [sys.executable, "-m", "gcpcall", "emulator", "--grpc-port", "0", "--http-port", "0",
             "--googleapis-declare", json.dumps(_DECLARATIONS),
             "--host-map", f"{_RELAY_HOST}=http://127.0.0.1:{relay_port}"],
            work / "emulator.log", pipe=True))
        assert emu.stdout is not None
        ports = json.loads(emu.stdout.readline())
        http = f"http://127.0.0.1:{ports['http_port']}"
        _admin(http, "PUT", "/metadata", {"email": _GSA, "projectId": "demo-project"})

        _say("starting the operator (identity mode Operator, its relay on "
             f"https://{_RELAY_HOST}/relay)")
        googleapis = ",".join(f"{host}={http}/googleapis/{host}" for host in (
            "compute.googleapis.com", "dataflow.googleapis.com", "cloudbuild.googleapis.com"))
        env = dict(os.environ)
        env.update(
            KUBECONFIG=kubeconfig, GCPCALL_CLUSTER_NAME="demo", GCPCALL_PROJECT="demo-project",
            GCPCALL_LOCATION="europe-west3", GCPCALL_IDENTITY_MODE="Operator",
            GCPCALL_SCHEDULER_ENDPOINT=f"127.0.0.1:{ports['grpc_port']}",
            GCPCALL_TASKS_ENDPOINT=f"127.0.0.1:{ports['grpc_port']}",
            GCPCALL_GRPC_INSECURE="true", GCPCALL_RUN_SETTLE_SECONDS="1",
            # the operator's own Google account: the emulator's metadata server
            GCE_METADATA_HOST=http.removeprefix("http://"),
            GCPCALL_IAM_CREDENTIALS_ENDPOINT=http,
            GCPCALL_OIDC_CERTS_URL=f"{http}/oauth2/v1/certs",
            GCPCALL_RELAY_URL=f"https://{_RELAY_HOST}/relay",
            GCPCALL_RELAY_PORT=str(relay_port), GCPCALL_RELAY_ADDRESS="127.0.0.1",
            GCPCALL_HOST_MAP=googleapis,
            PYTHONUNBUFFERED="1",
        )
        stack.enter_context(process(
            [sys.executable, "-m", "gcpcall", "run", "--metrics-port", "0", "--liveness", ""],
            work / "operator.log", env=env))

        _make_queue(f"127.0.0.1:{ports['grpc_port']}", "etl")

        _say(f"kubectl apply -n {NAMESPACE} -f examples/")
        kubectl("create", "namespace", NAMESPACE)
        wait_for_admission(kubectl_bin, kubeconfig)
        print(kubectl("apply", "-n", NAMESPACE, "-f", str(REPO / "examples")), end="")
        kubectl("wait", "-n", NAMESPACE, "--for=condition=Ready", "sgc", "--all", "--timeout=60s")

        _say("kubectl annotate sgc scale-up-mig nightly-dataflow "
             "gcpcall.dev/run-requested-at=<now>  (run them now)")
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        kubectl("annotate", "-n", NAMESPACE, "sgc", "scale-up-mig", "nightly-dataflow",
                f"gcpcall.dev/run-requested-at={stamp}", "--overwrite")
        _wait(lambda: kubectl("get", "-n", NAMESPACE, "sgc", "scale-up-mig", "-o",
                              "jsonpath={.status.lastRun.operation.done}").strip() == "true",
              90, "the resize's operation to be followed to its end")
        _wait(lambda: kubectl("get", "-n", NAMESPACE, "sgc", "nightly-dataflow", "-o",
                              "jsonpath={.status.lastRun.result}").strip(),
              60, "the Dataflow launch to be recorded")

        _say(f"kubectl get sgc -n {NAMESPACE} -o wide")
        print(kubectl("get", "sgc", "-n", NAMESPACE, "-o", "wide"), end="")
        _wait(lambda: kubectl("get", "-n", NAMESPACE, "gtask", "-o",
                              "jsonpath={.items[*].status.phase}").strip()
              not in ("", "Pending", "Queued", "Running"), 60, "the task to finish")
        _say(f"kubectl get gtask -n {NAMESPACE}")
        print(kubectl("get", "gtask", "-n", NAMESPACE), end="")
        _say(f"kubectl get sgc -n {NAMESPACE} scale-up-mig -o jsonpath='{{.status.lastRun}}'  "
             "(the run, with the operation it started)")
        print(json.dumps(json.loads(kubectl("get", "sgc", "-n", NAMESPACE, "scale-up-mig", "-o",
                                            "jsonpath={.status.lastRun}")), indent=2))
        _say(f"kubectl describe sgc -n {NAMESPACE} scale-up-mig")
        print(kubectl("describe", "sgc", "-n", NAMESPACE, "scale-up-mig"), end="")
        print(f"\nlogs: {work}")
        if args.keep:
            print(f"\nexport KUBECONFIG={kubeconfig}\nalias kubectl={kubectl_bin}"
                  "\n# everything keeps running; Ctrl-C stops it")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
    return 0
