"""Names of our objects in Google Cloud, and the ownership marker in a job's description.

Why deterministic names: the operator finds a job or task by computing its name, never by
remembering it, so a crash between "create" and "write status" loses nothing, and a
recreated ScheduledGcpCall finds (and adopts) its job. The marker lets adoption tell our
job from someone else's job that merely has the same id.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from gcpcall.api.errors import InvalidSpec

__all__ = [
    "MARKER_PREFIX",
    "MAX_DESCRIPTION",
    "MAX_ID_LENGTH",
    "ObjectKey",
    "check_cluster_name",
    "job_description",
    "job_id",
    "job_name",
    "marker",
    "parse_job_id",
    "parse_marker",
    "queue_name",
    "task_id",
    "task_name",
]

MAX_ID_LENGTH = 500  # Cloud Scheduler job ids and Cloud Tasks task ids
MAX_DESCRIPTION = 500  # Cloud Scheduler's description limit
MARKER_PREFIX = "managed-by: gcpcall-operator "
TASK_HASH_CHARS = 16  # 64 bits: collisions need ~4e9 tasks; enough to spread the keyspace

# No "_" in a cluster name: it separates the parts of a job id, and Kubernetes names never
# contain one, which is what keeps the id mapping one-to-one.
_CLUSTER = re.compile(r"^[A-Za-z0-9-]{1,63}$")
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_ID = re.compile(r"^[A-Za-z0-9_-]{1,500}$")
_MARKER_LINE = re.compile(
    r"^managed-by: gcpcall-operator ([^/\s]+)/([^/\s]+)/([^/\s]+)$", re.MULTILINE
)


@dataclass(frozen=True)
class ObjectKey:
    """Which Kubernetes object (in which cluster) a Google resource belongs to."""

    cluster: str
    namespace: str
    name: str


def check_cluster_name(cluster: str) -> str:
    """A configuration error, not a spec error: raises ValueError."""
    if not _CLUSTER.match(cluster):
        raise ValueError(f"clusterName {cluster!r} must be 1-63 letters, digits or hyphens")
    return cluster


def _check_object(namespace: str, name: str) -> None:
    if not _NAMESPACE.match(namespace):
        raise ValueError(f"{namespace!r} is not a Kubernetes namespace name")
    if not _NAME.match(name):
        raise ValueError(f"{name!r} is not a Kubernetes object name")


def _checked_id(value: str) -> str:
    if not _ID.match(value):
        # Unreachable with valid Kubernetes names (at most 63+1+63+1+253 = 381 characters),
        # but an id Google would refuse must never leave this module.
        raise InvalidSpec("metadata.name", f"the Google id {value[:80]!r}... does not fit "
                                           f"{MAX_ID_LENGTH} characters of [A-Za-z0-9_-]")
    return value


def job_id(cluster: str, namespace: str, name: str) -> str:
    """`<cluster>_<namespace>_<name>` with `.` -> `_`: one-to-one, since no part has `_`."""
    check_cluster_name(cluster)
    _check_object(namespace, name)
    return _checked_id(f"{cluster}_{namespace}_{name.replace('.', '_')}")


def parse_job_id(value: str) -> ObjectKey | None:
    """The inverse of `job_id`; None for an id this operator would not have made."""
    parts = value.split("_", 2)
    if len(parts) != 3:
        return None
    cluster, namespace, rest = parts
    name = rest.replace("_", ".")
    try:
        check_cluster_name(cluster)
        _check_object(namespace, name)
    except ValueError:
        return None
    return ObjectKey(cluster, namespace, name)


def job_name(project: str, location: str, cluster: str, namespace: str, name: str) -> str:
    return f"projects/{project}/locations/{location}/jobs/{job_id(cluster, namespace, name)}"


def marker(cluster: str, namespace: str, name: str) -> str:
    return f"{MARKER_PREFIX}{cluster}/{namespace}/{name}"


def job_description(user_text: str, cluster: str, namespace: str, name: str) -> str:
    """The user's description, then the marker on its own line, within 500 characters.

    The user's text is shortened (with an ellipsis) rather than refused: the CRD promises
    that, and the marker must survive intact for adoption to work.
    """
    mark = marker(cluster, namespace, name)
    text = user_text.strip()
    if not text:
        return mark
    room = MAX_DESCRIPTION - len(mark) - 1
    if len(text) > room:
        text = text[: max(room - 3, 0)].rstrip() + "..."
    return f"{text}\n{mark}"


def parse_marker(description: str) -> ObjectKey | None:
    """Which object a job description's marker names; None when it carries none.

    The last marker line wins, so a user description that quotes a marker cannot make
    a job look like another object's.
    """
    matches = _MARKER_LINE.findall(description or "")
    if not matches:
        return None
    cluster, namespace, name = matches[-1]
    return ObjectKey(cluster, namespace, name)


def task_id(cluster: str, namespace: str, name: str, uid: str) -> str:
    """A hashed prefix of (cluster, namespace, name, uid), then `<namespace>_<name>`.

    The uid makes a deleted-and-recreated GcpTask a new task (Cloud Tasks refuses a
    reused id for a long while); the hash prefix spreads ids over Cloud Tasks' keyspace
    instead of clustering them by namespace.
    """
    check_cluster_name(cluster)
    _check_object(namespace, name)
    digest = hashlib.sha256("\x00".join((cluster, namespace, name, uid)).encode()).hexdigest()
    return _checked_id(f"{digest[:TASK_HASH_CHARS]}_{namespace}_{name.replace('.', '_')}")


def queue_name(project: str, location: str, queue: str) -> str:
    return f"projects/{project}/locations/{location}/queues/{queue}"


def task_name(project: str, location: str, queue: str, cluster: str, namespace: str,
              name: str, uid: str) -> str:
    tid = task_id(cluster, namespace, name, uid)
    return f"{queue_name(project, location, queue)}/tasks/{tid}"
