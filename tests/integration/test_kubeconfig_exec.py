"""A kubeconfig whose user is an exec credential plugin (as gke-gcloud-auth-plugin is).

The plugin is a small Python script written at test time: it records each call and prints
an ExecCredential (client.authentication.k8s.io/v1) with the test API server's admin token
and an expirationTimestamp a few seconds ahead. `load_connection` and `KubeClient` must
work with it, fetch the token again before it expires (in the background, while the
current one is still good) and at once after it expired; and an operator process started
with that kubeconfig (kopf's login and our client) must reconcile an object, also after
the first token expired.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml
from tests.integration.conftest import (
    Emulator,
    Objects,
    Operator,
    instead_of,
    own_operator_for,
    wait_for,
)
from tests.integration.test_scheduled_lifecycle import ready, sample

from gcpcall.handlers.startup import login
from gcpcall.kube import KubeClient, load_connection

if TYPE_CHECKING:
    from tests.conftest import ControlPlane

PLUGIN = '''
import datetime, json, os, sys
with open(os.environ["CALLS_FILE"], "a") as calls:
    calls.write("call\\n")
info = json.loads(os.environ.get("KUBERNETES_EXEC_INFO") or "{}")
assert info.get("kind") == "ExecCredential", info
expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(
    seconds=float(os.environ["LIFETIME_SECONDS"]))
json.dump({
    "apiVersion": "client.authentication.k8s.io/v1",
    "kind": "ExecCredential",
    "status": {
        "token": os.environ["PLUGIN_TOKEN"],
        "expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
    },
}, sys.stdout)
'''


def exec_kubeconfig(tmp_path: Path, cp: ControlPlane, lifetime: float) -> tuple[Path, Path]:
    """A kubeconfig using the plugin; returns (kubeconfig, the file counting its calls)."""
    plugin = tmp_path / "plugin.py"
    plugin.write_text(PLUGIN)
    calls = tmp_path / "plugin-calls"
    calls.write_text("")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": {"server": cp.server,
                                                  "certificate-authority": cp.ca_file}}],
        "users": [{"name": "plugin", "user": {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": sys.executable,
            "args": [str(plugin)],
            "env": [{"name": "CALLS_FILE", "value": str(calls)},
                    {"name": "PLUGIN_TOKEN", "value": cp.token},
                    {"name": "LIFETIME_SECONDS", "value": str(lifetime)}],
            "interactiveMode": "Never",
        }}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "plugin",
                                                  "namespace": "team-x"}}],
        "current-context": "test",
    }))
    return kubeconfig, calls


def count(calls: Path) -> int:
    return len(calls.read_text().splitlines())


async def test_exec_plugin_token_is_fetched_again(controlplane: ControlPlane, tmp_path: Path
                                                  ) -> None:
    kubeconfig, calls = exec_kubeconfig(tmp_path, controlplane, lifetime=4)
    conn = load_connection(str(kubeconfig))
    assert count(calls) == 1
    assert conn.server == controlplane.server
    assert conn.default_namespace == "team-x"
    assert conn.credentials is not None
    expires = conn.credentials.expires_at
    assert expires is not None
    assert 0 < expires - time.time() <= 4
    login_again = conn.login_again_at()
    assert login_again is not None
    assert login_again.timestamp() < expires  # kopf logs in again before the expiry

    client = KubeClient(conn)
    try:
        assert await client.get_namespace("default") is not None
        assert count(calls) == 1  # the token is good: no new plugin call per request

        # half-way through its life: the next token is fetched in the background
        await asyncio.sleep(max(conn.credentials.refresh_at() - time.time(), 0) + 0.3)
        started = time.monotonic()
        assert await client.get_namespace("default") is not None
        assert time.monotonic() - started < 1.0
        await asyncio.to_thread(wait_for, lambda: count(calls) == 2, 10.0, 0.1,
                                "the background fetch")

        # expired (no request in between): the next request waits for a fresh token
        second = conn.credentials.expires_at
        assert second is not None
        assert second > expires
        await asyncio.sleep(max(second - time.time(), 0) + 0.5)
        assert await client.get_namespace("default") is not None
        assert count(calls) == 3
        third = conn.credentials.expires_at
        assert third is not None
        assert third > time.time()
    finally:
        await client.close()


def test_kopf_login_gets_the_plugin_token_and_when_to_log_in_again(
    controlplane: ControlPlane, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kubeconfig, calls = exec_kubeconfig(tmp_path, controlplane, lifetime=60)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    info = login()
    assert count(calls) == 1
    assert info.token == controlplane.token
    assert info.server == controlplane.server
    assert info.default_namespace == "team-x"
    assert info.expiration is not None
    assert 20 < info.expiration.timestamp() - time.time() <= 60  # half-way: about 30 s


@pytest.fixture
def exec_operator(
    operator: Operator, controlplane: ControlPlane, emulator: Emulator, namespace: str,
    tmp_path: Path,
) -> Iterator[tuple[Operator, Path]]:
    kubeconfig, calls = exec_kubeconfig(tmp_path, controlplane, lifetime=8)
    mine = own_operator_for(controlplane, emulator, tmp_path / "operator.log", namespace,
                            KUBECONFIG=str(kubeconfig))
    with instead_of(operator, mine):
        yield mine, calls


def test_operator_runs_with_an_exec_plugin(exec_operator: tuple[Operator, Path], sgc: Objects,
                                           namespace: str) -> None:
    op, calls = exec_operator
    sgc.create(namespace, sample("first"))
    ready(sgc, namespace, "first")
    at_first = count(calls)
    assert at_first >= 2  # kopf's login and our own client
    time.sleep(9)  # every token fetched so far has expired by now
    sgc.create(namespace, sample("second"))
    ready(sgc, namespace, "second")
    assert count(calls) > at_first, op.log()
    log = op.log()
    assert "Traceback" not in log, log
