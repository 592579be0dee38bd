"""Reading a kubeconfig and running its exec credential plugin, as kubectl does.

Why by hand and not the official client's loader: that loader lives in the `kubernetes`
package, whose import loads the whole generated client (every API and model module): 45 MB
of resident memory, about half of the operator's empty process, for a few hundred lines of
rules that Kubernetes documents as stable (kubeconfig merging, and the client.authentication
exec protocol that gke-gcloud-auth-plugin, aws-iam-authenticator and kubelogin speak). kopf
ships a minimal reader of its own too (`login_with_kubeconfig`), which has no exec plugins,
token files or relative paths. What is read here, with the rules of client-go's
`clientcmd`:

- `$KUBECONFIG` may list several files: the first file that sets `current-context` wins,
  and so does the first file that defines a context, cluster or user of a given name;
  relative paths (certificates, `tokenFile`, an exec command with a path separator) are
  relative to the file that holds them;
- a cluster's `server`, `certificate-authority(-data)`, `insecure-skip-tls-verify`;
- a user's `token`, `tokenFile` (read again on each refresh), `client-certificate(-data)`
  and `client-key(-data)`, or `exec` (`client.authentication.k8s.io/v1` or `v1beta1`: the
  plugin gets `KUBERNETES_EXEC_INFO`, non-interactive, with the cluster when
  `provideClusterInfo` asks; its `ExecCredential` gives a token with an expiry, or a client
  certificate).

Refused with a reason rather than half-honoured: `auth-provider` (kubectl dropped the gcp
and azure ones in 1.26 in favour of exec plugins; for OIDC, kubelogin is the exec plugin),
basic auth, and an interactive-only plugin.
"""

from __future__ import annotations

import atexit
import base64
import datetime
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = ["ExecCredential", "KubeConfig", "KubeConfigError", "read_kubeconfig", "run_exec"]

_EXEC_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
_EXEC_TIMEOUT = 60.0  # a plugin that may refresh a token over the network


class KubeConfigError(Exception):
    """No usable connection: a kubeconfig or in-cluster setup the client cannot use."""


@dataclass(frozen=True)
class ExecCredential:
    token: str | None
    expires_at: float | None  # POSIX seconds
    cert_pem: bytes | None = None
    key_pem: bytes | None = None


@dataclass(frozen=True)
class KubeConfig:
    """The current context's cluster and user, every path made absolute."""

    server: str
    ca_path: str | None
    insecure: bool
    token: str | None
    token_path: str | None
    cert_path: str | None
    key_path: str | None
    namespace: str | None
    exec_config: Mapping[str, Any] | None
    cluster: Mapping[str, Any]  # for an exec plugin that asks for the cluster's details
    base_dir: str


def read_kubeconfig(paths: str, context: str | None = None) -> KubeConfig:
    """The connection the kubeconfig file(s) `paths` (os.pathsep-separated) describe for
    `context` (the current context when None)."""
    files = [os.path.expanduser(p.strip()) for p in paths.split(os.pathsep) if p.strip()]
    current: str | None = None
    named: dict[str, dict[str, tuple[dict[str, Any], Path]]] = {
        "contexts": {}, "clusters": {}, "users": {}}
    found = False
    for name in files:
        path = Path(name)
        if not path.exists():
            continue  # kubectl skips a listed file that does not exist
        found = True
        try:
            doc = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise KubeConfigError(f"kubeconfig {path}: {e}") from None
        if not isinstance(doc, dict):
            raise KubeConfigError(f"kubeconfig {path}: not a mapping")
        current = current or doc.get("current-context") or None
        for section, item_key in (("contexts", "context"), ("clusters", "cluster"),
                                  ("users", "user")):
            for item in doc.get(section) or []:
                if isinstance(item, dict) and item.get("name") is not None:
                    entry = item.get(item_key) or {}
                    if not isinstance(entry, dict):
                        raise KubeConfigError(f"kubeconfig {path}: {section} entry "
                                              f"{item['name']!r} is not a mapping")
                    named[section].setdefault(str(item["name"]), (entry, path.parent))
    if not found:
        raise KubeConfigError(f"no kubeconfig at {paths}")
    wanted = context or current
    if not wanted:
        raise KubeConfigError(f"kubeconfig {paths}: no current-context and none given")
    if wanted not in named["contexts"]:
        raise KubeConfigError(f"kubeconfig {paths}: no context named {wanted!r}")
    ctx, _ = named["contexts"][wanted]
    cluster, cluster_dir = named["clusters"].get(str(ctx.get("cluster")), ({}, Path()))
    user, user_dir = named["users"].get(str(ctx.get("user")), ({}, Path()))
    if not cluster.get("server"):
        raise KubeConfigError(f"kubeconfig {paths}: context {wanted!r} has no cluster server")
    for refused, why in (("auth-provider", "auth providers are not supported (kubectl dropped "
                          "gcp and azure in 1.26): use the provider's exec plugin, such as "
                          "gke-gcloud-auth-plugin or kubelogin"),
                         ("username", "basic authentication is not supported"),
                         ("password", "basic authentication is not supported")):
        if user.get(refused):
            raise KubeConfigError(f"kubeconfig {paths}: user of context {wanted!r}: "
                                  f"{refused}: {why}")
    return KubeConfig(
        server=str(cluster["server"]).rstrip("/"),
        ca_path=_file(cluster, "certificate-authority", cluster_dir, "ca.crt"),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        token=user.get("token") or None,
        token_path=_path(user.get("tokenFile"), user_dir),
        cert_path=_file(user, "client-certificate", user_dir, "client.crt"),
        key_path=_file(user, "client-key", user_dir, "client.key"),
        namespace=ctx.get("namespace") or None,
        exec_config=user.get("exec") or None,
        cluster=cluster,
        base_dir=str(user_dir),
    )


def run_exec(config: KubeConfig) -> ExecCredential:
    """Run the context's exec plugin once and read its ExecCredential."""
    spec = config.exec_config or {}
    version = spec.get("apiVersion")
    if version not in _EXEC_VERSIONS:
        raise KubeConfigError(f"exec plugin apiVersion {version!r} is not one of "
                              f"{', '.join(_EXEC_VERSIONS)}")
    if spec.get("interactiveMode") == "Always":
        raise KubeConfigError("the exec plugin is interactive only (interactiveMode: Always); "
                              "the operator cannot answer it")
    command = str(spec.get("command") or "")
    if not command:
        raise KubeConfigError("the exec plugin has no command")
    if os.sep in command and not os.path.isabs(command):
        command = os.path.join(config.base_dir, command)
    info: dict[str, Any] = {"apiVersion": version, "kind": "ExecCredential",
                            "spec": {"interactive": False}}
    if spec.get("provideClusterInfo"):
        info["spec"]["cluster"] = _cluster_info(config.cluster)
    env = dict(os.environ)
    for item in spec.get("env") or []:
        env[str(item.get("name"))] = str(item.get("value", ""))
    env["KUBERNETES_EXEC_INFO"] = json.dumps(info)
    try:
        # the command is the one the kubeconfig's owner wrote, as kubectl runs it
        done = subprocess.run(
            [command, *[str(a) for a in spec.get("args") or []]], env=env,
            stdin=subprocess.DEVNULL, capture_output=True, timeout=_EXEC_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        hint = spec.get("installHint")
        raise KubeConfigError(f"exec plugin {command!r}: {e}"
                              + (f" ({hint})" if hint else "")) from None
    if done.returncode != 0:
        stderr = done.stderr.decode(errors="replace").strip()[-300:]
        raise KubeConfigError(f"exec plugin {command!r} exited {done.returncode}: {stderr}")
    return parse_exec_output(done.stdout, version)


def parse_exec_output(output: bytes, version: str) -> ExecCredential:
    try:
        doc = json.loads(output)
    except ValueError:
        raise KubeConfigError("the exec plugin's output is not JSON") from None
    if not isinstance(doc, dict) or doc.get("kind") != "ExecCredential":
        raise KubeConfigError("the exec plugin's output is not an ExecCredential")
    if doc.get("apiVersion") != version:
        raise KubeConfigError(f"the exec plugin answered {doc.get('apiVersion')!r}, "
                              f"asked for {version!r}")
    status = doc.get("status") or {}
    token = status.get("token") or None
    cert = status.get("clientCertificateData")
    key = status.get("clientKeyData")
    if not token and not (cert and key):
        raise KubeConfigError("the exec plugin's ExecCredential has neither a token nor a "
                              "client certificate and key")
    expires: float | None = None
    if status.get("expirationTimestamp"):
        # (the stdlib's parser: `api.observed.parse_time` is in a layer kube may not use)
        try:
            stamp = datetime.datetime.fromisoformat(str(status["expirationTimestamp"]))
        except ValueError:
            stamp = None
        if stamp is None or stamp.tzinfo is None:
            raise KubeConfigError("the exec plugin's expirationTimestamp is not RFC 3339: "
                                  f"{status['expirationTimestamp']!r}")
        expires = stamp.timestamp()
    return ExecCredential(token, expires, cert.encode() if cert else None,
                          key.encode() if key else None)


_private_dir: str | None = None


def write_private(content: bytes, name: str) -> str:
    """`content` in a file only this process's user can read, removed at exit (TLS
    libraries load certificates and keys from files). Named by its content, so that
    reading the same kubeconfig again (each kopf login does) reuses the file."""
    global _private_dir
    if _private_dir is None:
        _private_dir = tempfile.mkdtemp(prefix="gcpcall-kubeconfig-")
        atexit.register(shutil.rmtree, _private_dir, True)
    path = os.path.join(_private_dir, f"{hashlib.sha256(content).hexdigest()[:32]}-{name}")
    if not os.path.exists(path):
        fd, staged = tempfile.mkstemp(dir=_private_dir)
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        os.replace(staged, path)  # whole or not at all, for a concurrent reader
    return path


def _cluster_info(cluster: Mapping[str, Any]) -> dict[str, Any]:
    info: dict[str, Any] = {"server": cluster.get("server")}
    if cluster.get("certificate-authority-data"):
        info["certificate-authority-data"] = cluster["certificate-authority-data"]
    if cluster.get("insecure-skip-tls-verify"):
        info["insecure-skip-tls-verify"] = True
    if cluster.get("tls-server-name"):
        info["tls-server-name"] = cluster["tls-server-name"]
    extensions = {e.get("name"): e.get("extension") for e in cluster.get("extensions") or []
                  if isinstance(e, dict)}
    if "client.authentication.k8s.io/exec" in extensions:
        info["config"] = extensions["client.authentication.k8s.io/exec"]
    return info


def _path(value: Any, base: Path) -> str | None:
    if not value:
        return None
    path = Path(os.path.expanduser(str(value)))
    return str(path if path.is_absolute() else base / path)


def _file(section: Mapping[str, Any], key: str, base: Path, name: str) -> str | None:
    """The file a `key` or `key-data` (base64) field names or holds."""
    data = section.get(f"{key}-data")
    if data:
        try:
            return write_private(base64.b64decode(str(data), validate=True), name)
        except ValueError:
            raise KubeConfigError(f"kubeconfig {key}-data is not base64") from None
    return _path(section.get(key), base)
