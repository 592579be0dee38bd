"""Reading kubeconfigs and running exec plugins (`kube/kubeconfig.py`, `load_connection`).

The exec plugins here are real processes (small Python scripts written at test time),
speaking the client.authentication.k8s.io protocol as gke-gcloud-auth-plugin does.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from gcpcall.kube import KubeConfigError, load_connection
from gcpcall.kube import connection as connection_module
from gcpcall.kube.kubeconfig import parse_exec_output, read_kubeconfig, run_exec

V1 = "client.authentication.k8s.io/v1"


def write(path: Path, doc: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc))
    return path


def config(context: str, cluster: dict[str, Any], user: dict[str, Any],
           namespace: str | None = None, current: str | None = None) -> dict[str, Any]:
    ctx: dict[str, Any] = {"cluster": f"{context}-cluster", "user": f"{context}-user"}
    if namespace:
        ctx["namespace"] = namespace
    return {
        "apiVersion": "v1", "kind": "Config",
        "current-context": current if current is not None else context,
        "contexts": [{"name": context, "context": ctx}],
        "clusters": [{"name": f"{context}-cluster", "cluster": cluster}],
        "users": [{"name": f"{context}-user", "user": user}],
    }


def plugin(tmp_path: Path, output: dict[str, Any] | None, *, exit_code: int = 0) -> Path:
    """An exec plugin that records its environment and prints `output`."""
    script = tmp_path / "bin" / "plugin.py"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import json, os, sys
        with open({str(tmp_path / "seen.json")!r}, "w") as f:
            json.dump({{"info": os.environ.get("KUBERNETES_EXEC_INFO"),
                       "extra": os.environ.get("EXTRA"), "args": sys.argv[1:]}}, f)
        if {exit_code}:
            sys.stderr.write("login required")
            sys.exit({exit_code})
        json.dump({output!r}, sys.stdout)
        """))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def seen(tmp_path: Path) -> dict[str, Any]:
    return json.loads((tmp_path / "seen.json").read_text())  # type: ignore[no-any-return]


def test_merged_files_first_value_wins_and_paths_are_relative_to_their_file(
        tmp_path: Path) -> None:
    first = write(tmp_path / "a" / "config", config(
        "one", {"server": "https://one.example:6443/", "certificate-authority": "ca.pem"},
        {"token": "t1", "client-certificate": "certs/me.crt", "client-key": "/abs/me.key"},
        namespace="team-a"))
    second_doc = config("two", {"server": "https://two.example"}, {"token": "t2"},
                        current="two")
    # a second definition of `one`'s cluster, which must lose to the first file's
    second_doc["clusters"].append({"name": "one-cluster",
                                   "cluster": {"server": "https://other.example"}})
    second = write(tmp_path / "b" / "config", second_doc)
    got = read_kubeconfig(f"{first}{os.pathsep}{tmp_path / 'missing'}{os.pathsep}{second}")
    assert got.server == "https://one.example:6443"
    assert got.ca_path == str(tmp_path / "a" / "ca.pem")
    assert got.cert_path == str(tmp_path / "a" / "certs" / "me.crt")
    assert got.key_path == "/abs/me.key"
    assert (got.token, got.namespace, got.insecure) == ("t1", "team-a", False)
    other = read_kubeconfig(f"{first}{os.pathsep}{second}", context="two")
    assert (other.server, other.token, other.namespace) == ("https://two.example", "t2", None)


def test_embedded_certificates_are_written_to_private_files(tmp_path: Path) -> None:
    ca, cert = b"-----BEGIN CERTIFICATE-----\nca\n", b"-----BEGIN CERTIFICATE-----\nme\n"
    path = write(tmp_path / "config", config(
        "c", {"server": "https://c.example",
              "certificate-authority-data": base64.b64encode(ca).decode()},
        {"client-certificate-data": base64.b64encode(cert).decode(),
         "client-key-data": base64.b64encode(b"key").decode()}))
    conn = load_connection(str(path))
    assert conn.ca_path is not None
    assert conn.cert_path is not None
    assert conn.key_path is not None
    assert Path(conn.ca_path).read_bytes() == ca
    assert Path(conn.cert_path).read_bytes() == cert
    assert Path(conn.key_path).read_bytes() == b"key"
    assert stat.S_IMODE(Path(conn.key_path).stat().st_mode) == 0o600
    assert conn.current_token() is None
    # read again (each kopf login does): the same files, none added
    files = set(Path(conn.ca_path).parent.iterdir())
    again = load_connection(str(path))
    assert (again.ca_path, again.cert_path, again.key_path) == (
        conn.ca_path, conn.cert_path, conn.key_path)
    assert set(Path(conn.ca_path).parent.iterdir()) == files


@pytest.mark.parametrize(("user", "field"), [
    ({"auth-provider": {"name": "oidc"}}, "auth-provider"),
    ({"username": "admin", "password": "x"}, "username"),
])
def test_unsupported_users_are_refused_by_name(tmp_path: Path, user: dict[str, Any],
                                              field: str) -> None:
    path = write(tmp_path / "config", config("c", {"server": "https://c.example"}, user))
    with pytest.raises(KubeConfigError, match=field):
        load_connection(str(path))


@pytest.mark.parametrize(("doc", "message"), [
    (config("c", {"server": "https://c.example"}, {}, current=""), "no current-context"),
    (config("c", {"server": "https://c.example"}, {}, current="nope"), "no context named"),
    (config("c", {}, {}), "no cluster server"),
    (config("c", {"server": "https://c", "certificate-authority-data": "%%%"}, {}),
     "not base64"),
    ({"current-context": "c", "contexts": [{"name": "c", "context": "oops"}]},
     "contexts entry 'c' is not a mapping"),
])
def test_broken_kubeconfigs_say_what_is_wrong(tmp_path: Path, doc: dict[str, Any],
                                              message: str) -> None:
    path = write(tmp_path / "config", doc)
    with pytest.raises(KubeConfigError, match=message):
        load_connection(str(path))


def test_no_kubeconfig_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(KubeConfigError, match="no kubeconfig"):
        load_connection(str(tmp_path / "absent"))


def test_a_token_file_is_read_again(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")
    path = write(tmp_path / "config", config("c", {"server": "https://c.example"},
                                             {"tokenFile": "token"}))
    conn = load_connection(str(path))
    assert conn.current_token() == "first"
    token.write_text("second")
    assert conn.credentials is not None
    conn.credentials._fetched_at = 0.0  # a minute has passed: due again
    conn.credentials._refresh()
    assert conn.current_token() == "second"


def test_an_exec_plugin_gives_the_token_and_its_expiry(tmp_path: Path) -> None:
    script = plugin(tmp_path, {"apiVersion": V1, "kind": "ExecCredential",
                               "status": {"token": "from-plugin",
                                          "expirationTimestamp": "2030-01-02T03:04:05Z"}})
    path = write(tmp_path / "kube" / "config", config(
        "c", {"server": "https://c.example", "certificate-authority-data":
              base64.b64encode(b"ca").decode()},
        {"exec": {"apiVersion": V1, "command": sys.executable, "args": [str(script), "x"],
                  "env": [{"name": "EXTRA", "value": "yes"}], "provideClusterInfo": True,
                  "interactiveMode": "Never"}}))
    conn = load_connection(str(path))
    assert conn.current_token() == "from-plugin"
    assert conn.credentials is not None
    assert conn.credentials.expires_at == 1893553445.0
    got = seen(tmp_path)
    assert got["extra"] == "yes"
    assert got["args"] == ["x"]
    info = json.loads(got["info"])
    assert info == {"apiVersion": V1, "kind": "ExecCredential",
                    "spec": {"interactive": False, "cluster": {
                        "server": "https://c.example",
                        "certificate-authority-data": base64.b64encode(b"ca").decode()}}}


def test_a_relative_plugin_command_is_relative_to_the_kubeconfig(tmp_path: Path) -> None:
    script = plugin(tmp_path, {"apiVersion": V1, "kind": "ExecCredential",
                               "status": {"token": "rel"}})
    path = write(tmp_path / "config", config(
        "c", {"server": "https://c.example"},
        {"exec": {"apiVersion": V1, "command": "./bin/plugin.py"}}))
    assert script.exists()
    conn = load_connection(str(path))
    assert conn.current_token() == "rel"
    assert json.loads(seen(tmp_path)["info"])["spec"] == {"interactive": False}


def test_a_plugin_certificate_is_used_for_tls(tmp_path: Path) -> None:
    plugin(tmp_path, {"apiVersion": V1, "kind": "ExecCredential",
                      "status": {"clientCertificateData": "CERT", "clientKeyData": "KEY"}})
    path = write(tmp_path / "config", config(
        "c", {"server": "https://c.example"},
        {"exec": {"apiVersion": V1, "command": "bin/plugin.py"}}))
    conn = load_connection(str(path))
    assert conn.cert_path is not None
    assert conn.key_path is not None
    assert Path(conn.cert_path).read_text() == "CERT"
    assert Path(conn.key_path).read_text() == "KEY"
    assert conn.current_token() is None


@pytest.mark.parametrize(("exec_config", "output", "exit_code", "message"), [
    ({"apiVersion": "client.authentication.k8s.io/v1alpha1"}, {}, 0, "apiVersion"),
    ({"apiVersion": V1, "interactiveMode": "Always"}, {}, 0, "interactive"),
    ({"apiVersion": V1}, {}, 3, "exited 3: login required"),
    ({"apiVersion": V1}, {"apiVersion": V1, "kind": "ExecCredential", "status": {}}, 0,
     "neither a token"),
    ({"apiVersion": V1}, {"apiVersion": "client.authentication.k8s.io/v1beta1",
                          "kind": "ExecCredential", "status": {"token": "t"}}, 0,
     "answered"),
    ({"apiVersion": V1}, {"apiVersion": V1, "kind": "ExecCredential",
                          "status": {"token": "t", "expirationTimestamp": "soon"}}, 0,
     "RFC 3339"),
    ({"apiVersion": V1}, {"apiVersion": V1, "kind": "ExecCredential",
                          "status": {"token": "t",
                                     "expirationTimestamp": "2030-01-02T03:04:05"}}, 0,
     "RFC 3339"),
])
def test_a_plugin_that_cannot_be_used_says_why(
        tmp_path: Path, exec_config: dict[str, Any], output: dict[str, Any], exit_code: int,
        message: str) -> None:
    plugin(tmp_path, output, exit_code=exit_code)
    path = write(tmp_path / "config", config(
        "c", {"server": "https://c.example"},
        {"exec": {**exec_config, "command": "bin/plugin.py"}}))
    with pytest.raises(KubeConfigError, match=message):
        load_connection(str(path))


def test_a_missing_plugin_names_the_install_hint(tmp_path: Path) -> None:
    path = write(tmp_path / "config", config(
        "c", {"server": "https://c.example"},
        {"exec": {"apiVersion": V1, "command": "no-such-plugin-anywhere",
                  "installHint": "install it with gcloud components"}}))
    with pytest.raises(KubeConfigError, match="install it with gcloud"):
        run_exec(read_kubeconfig(str(path)))


def test_plugin_output_that_is_not_a_credential_is_refused() -> None:
    with pytest.raises(KubeConfigError, match="not JSON"):
        parse_exec_output(b"<html>", V1)
    with pytest.raises(KubeConfigError, match="not an ExecCredential"):
        parse_exec_output(b"[]", V1)


def test_in_cluster_reads_the_service_account(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("pod-token\n")
    (sa / "ca.crt").write_text("ca")
    (sa / "namespace").write_text("gcpcall-system")
    monkeypatch.setattr(connection_module, "_SA_DIR", sa)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    conn = load_connection()
    assert conn.server == "https://[fd00::1]:443"
    assert conn.ca_path == str(sa / "ca.crt")
    assert conn.default_namespace == "gcpcall-system"
    assert conn.current_token() == "pod-token"
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    with pytest.raises(KubeConfigError, match="KUBERNETES_SERVICE_HOST"):
        load_connection()


def test_the_operator_process_never_loads_the_official_client() -> None:
    """kopf would import it when installed (45 MB); `handlers/__init__` keeps it out."""
    code = ("import sys, gcpcall.handlers.main, gcpcall.relay.main; "
            "import kopf; kopf.get_default_registry(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'kubernetes'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": "operator"})
    assert out.stdout.strip() == "[]", out.stdout
    # and it is installed here, so the check above is not vacuous
    assert subprocess.run([sys.executable, "-c", "import kubernetes.client"],
                          check=False).returncode == 0
