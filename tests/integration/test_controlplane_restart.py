"""The test API server itself: restarted on the same data and port, and paused (SIGSTOP).

Why: the operator's "API server restarted" and "API server hung" stories need a control
plane that comes back as the same cluster (its objects, CA, admin token and ServiceAccount
signing key) on the same address, so clients holding the old kubeconfig simply reconnect.
These tests prove `ControlPlane.restart()` and `pause()`/`resume()` do that, on a control
plane of their own (never the session's, which other tests share).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch
from tests.conftest import ControlPlane, running_controlplane
from tests.integration.conftest import wait_for


@pytest.fixture(scope="module")
def own_controlplane(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[ControlPlane]:
    workdir = tmp_path_factory.mktemp("restart-controlplane")
    with running_controlplane(workdir, request, apply_crds=False) as cp:
        yield cp


def _client(kubeconfig: Path, retries: bool = True) -> k8s_client.CoreV1Api:
    cfg = k8s_client.Configuration()
    k8s_config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    if not retries:
        cfg.retries = False  # urllib3 raises the first timeout instead of retrying it
    return k8s_client.CoreV1Api(k8s_client.ApiClient(cfg))


class ConfigMapWatcher:
    """A watch client as controllers write it: list, then watch from the list's
    resourceVersion, and on any end of the stream (or error) watch again from the last
    version seen (relisting only on 410 Gone). Records what it saw and how often it
    (re)connected."""

    def __init__(self, core: k8s_client.CoreV1Api, namespace: str) -> None:
        self.core = core
        self.namespace = namespace
        self.seen: list[tuple[str, str]] = []
        self.watches_started = 0
        self.errors: list[str] = []
        self.log: list[str] = []  # what it did, with times, for a failure's message
        self._t0 = time.monotonic()
        self._stop = threading.Event()
        self._watch: k8s_watch.Watch | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ConfigMapWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        w = self._watch
        resp = getattr(w, "_resp", None)  # the open watch response, if any
        if resp is not None:
            resp.shutdown()  # urllib3 >= 2.3: ends a blocking read from another thread
        self._thread.join(timeout=10)

    def _note(self, what: str) -> None:
        self.log.append(f"{time.monotonic() - self._t0:.2f}s {what}")

    def _run(self) -> None:
        rv: str | None = None
        while not self._stop.is_set():
            try:
                if rv is None:
                    listed = self.core.list_namespaced_config_map(
                        self.namespace, _request_timeout=5
                    )
                    rv = listed.metadata.resource_version
                    self._note(f"listed at {rv}")
                self.watches_started += 1
                self._note(f"watch from {rv}")
                w = self._watch = k8s_watch.Watch()
                for event in w.stream(
                    self.core.list_namespaced_config_map,
                    self.namespace,
                    resource_version=rv,
                    allow_watch_bookmarks=True,
                    timeout_seconds=30,
                    _request_timeout=(2, 40),
                ):
                    obj: Any = event["object"]
                    rv = obj.metadata.resource_version
                    if event["type"] != "BOOKMARK":
                        self.seen.append((event["type"], obj.metadata.name))
                    if self._stop.is_set():
                        w.stop()
                self._note("watch ended")
            except k8s_client.ApiException as e:
                self.errors.append(f"{e.status} {e.reason}")
                self._note(self.errors[-1])
                if e.status == 410:
                    rv = None
                time.sleep(0.2)
            except Exception as e:  # the server went away: connection reset/refused, timeout
                self.errors.append(type(e).__name__)
                self._note(f"{type(e).__name__}: {e}")
                time.sleep(0.2)


def test_restart_keeps_cluster_and_clients(own_controlplane: ControlPlane, tmp_path: Path) -> None:
    cp = own_controlplane
    old_kubeconfig = tmp_path / "kubeconfig.before-restart"
    old_kubeconfig.write_bytes(Path(cp.kubeconfig).read_bytes())
    ca_before = Path(cp.ca_file).read_bytes()
    port_before = cp.port

    core = _client(old_kubeconfig)
    ns = "restart-story"
    core.create_namespace(k8s_client.V1Namespace(metadata=k8s_client.V1ObjectMeta(name=ns)))
    core.create_namespaced_config_map(
        ns,
        k8s_client.V1ConfigMap(
            metadata=k8s_client.V1ObjectMeta(name="before"), data={"kept": "yes"}
        ),
    )
    cp.kubectl("create", "serviceaccount", "-n", ns, "survivor")
    sa_token = cp.kubectl("create", "token", "-n", ns, "survivor").stdout.strip()

    with ConfigMapWatcher(_client(old_kubeconfig), ns) as watcher:
        wait_for(lambda: watcher.watches_started >= 1, timeout=10, what="the watch to open")
        watcher._note("restarting")
        cp.restart()
        watcher._note("restarted")

        # Same address, same CA, same admin credentials: the old kubeconfig is still valid.
        assert cp.port == port_before
        assert Path(cp.ca_file).read_bytes() == ca_before
        assert Path(cp.kubeconfig).read_bytes() == old_kubeconfig.read_bytes()
        kept = core.read_namespaced_config_map("before", ns)
        assert kept.data == {"kept": "yes"}

        # A ServiceAccount token issued before the restart still authenticates (same
        # signing key and issuer).
        whoami = cp.kubectl(
            "--token", sa_token, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"
        )
        assert whoami.stdout == f"system:serviceaccount:{ns}:survivor"

        # The watch client reconnects to the restarted server and sees what happens there.
        # (Its new watch cache starts at etcd's current revision, so the client's old
        # resourceVersion may be answered with 410 Gone and a relist, as informers expect.)
        # Change the ConfigMap until the client's new watch delivers one of the changes.
        deadline = time.monotonic() + 30
        n = 0
        while ("MODIFIED", "before") not in watcher.seen and time.monotonic() < deadline:
            n += 1
            core.patch_namespaced_config_map("before", ns, {"data": {"kept": "yes", "n": str(n)}})
            watcher._note(f"patched 'before' (n={n})")
            wait_until = time.monotonic() + 1
            while ("MODIFIED", "before") not in watcher.seen and time.monotonic() < wait_until:
                time.sleep(0.1)
        assert ("MODIFIED", "before") in watcher.seen, (
            f"the watch saw no change made after the restart: saw {watcher.seen}; "
            f"its log: {watcher.log}"
        )
        assert watcher.watches_started >= 2, "the watch never had to reconnect"


def test_pause_and_resume(own_controlplane: ControlPlane) -> None:
    cp = own_controlplane
    core = _client(Path(cp.kubeconfig), retries=False)
    core.list_namespace(_request_timeout=5)

    cp.pause()
    try:
        started = time.monotonic()
        # The kernel still accepts the connection; nobody answers it.
        with pytest.raises(urllib3.exceptions.ReadTimeoutError):
            core.list_namespace(_request_timeout=(1, 1))
        time.sleep(max(0.0, 3 - (time.monotonic() - started)))
    finally:
        cp.resume()

    listed = wait_for(
        lambda: _answers(core), timeout=30, what="the API server to answer after SIGCONT"
    )
    assert listed.items is not None


def _answers(core: k8s_client.CoreV1Api) -> Any:
    try:
        return core.list_namespace(_request_timeout=2)
    except Exception:
        return None
