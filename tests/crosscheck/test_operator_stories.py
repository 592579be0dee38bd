"""The GcpTask integration stories, through the operator, against the emulator under check.

Why: issue 5 asks that the operator's own stories hold on an independent Cloud Tasks
implementation wherever it implements the RPCs used, not only on ours. The operator runs
as a process against the real API server, with its Cloud Tasks endpoint pointed at
`CLOUD_TASKS_EMULATOR_ADDR`; assertions read the emulator through the official client.

Not here, because no emulator can dispatch to a local target under the operator's rules:
the CRD accepts https targets only, and only our emulator maps a host to a local server.
Dispatch, attempts, outcome and TTL are covered on ours (tests/integration).
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from google.api_core import exceptions
from google.cloud import tasks_v2
from kubernetes import client as k8s_client

from gcpcall.api import naming
from tests.conftest import ControlPlane
from tests.crosscheck.conftest import ADDRESS, PARENT
from tests.integration.conftest import Objects, Operator, condition, operator_env, wait_for

PROJECT, LOCATION = PARENT.split("/")[1], PARENT.split("/")[3]
CLUSTER = "crosscheck"
RUNNER = "runner@crosscheck.iam.gserviceaccount.com"


@pytest.fixture(scope="module")
def operator(controlplane: ControlPlane, tmp_path_factory: pytest.TempPathFactory,
             ) -> Iterator[Operator]:
    # operator_env wants an emulator for its endpoints; only Cloud Tasks is used here
    stand_in: Any = SimpleNamespace(grpc_target=ADDRESS, http_url="http://127.0.0.1:9")
    env = operator_env(controlplane, stand_in, GCPCALL_CLUSTER_NAME=CLUSTER,
                       GCPCALL_PROJECT=PROJECT, GCPCALL_LOCATION=LOCATION)
    op = Operator(env, Path(tmp_path_factory.mktemp("operator")) / "operator.log")
    op.start()
    yield op
    op.stop()


@pytest.fixture
def gtask(k8s: k8s_client.ApiClient) -> Objects:
    return Objects(k8s, "gcptasks")


def queue_id() -> str:
    return f"q-{uuid.uuid4().hex[:10]}"


def make_queue(client: tasks_v2.CloudTasksClient, qid: str) -> None:
    client.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=f"{PARENT}/queues/{qid}"))


def later(seconds: float) -> str:
    when = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def sample(name: str, qid: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "gcpcall.dev/v1alpha1", "kind": "GcpTask", "metadata": {"name": name},
        "spec": {
            "queue": qid, "scheduleTime": later(3600),  # never dispatched during the test
            "target": {
                "uri": "https://target.googleapis.com/v1/things?size=4", "method": "POST",
                "headers": [{"name": "Content-Type", "value": "application/json"}],
                "body": {"json": {"size": 4}},
                "auth": {"oauth": {}, "serviceAccountEmail": RUNNER},
            },
            **spec,
        },
    }


def task_name(obj: dict[str, Any], qid: str) -> str:
    meta = obj["metadata"]
    return naming.task_name(PROJECT, LOCATION, qid, CLUSTER, meta["namespace"], meta["name"],
                            meta["uid"])


def wait_reason(gtask: Objects, ns: str, name: str, reason: str) -> dict[str, Any]:
    return dict(wait_for(
        lambda: (o := gtask.get(ns, name)) and condition(o, "Ready").get("reason") == reason
        and o, timeout=60, what=f"{name} Ready reason {reason}"))


def exists(client: tasks_v2.CloudTasksClient, name: str) -> bool:
    try:
        client.get_task(name=name)
    except (exceptions.NotFound, exceptions.FailedPrecondition):
        return False
    return True


def tasks_in(client: tasks_v2.CloudTasksClient, qid: str) -> list[str]:
    return [t.name for t in client.list_tasks(parent=f"{PARENT}/queues/{qid}")]


def test_apply_creates_the_task_with_its_fields(
    operator: Operator, gtask: Objects, namespace: str, client: tasks_v2.CloudTasksClient
) -> None:
    qid = queue_id()
    make_queue(client, qid)
    gtask.create(namespace, sample("one", qid))
    obj = wait_reason(gtask, namespace, "one", "Created")
    assert obj["status"]["phase"] == "Queued"
    assert obj["status"]["taskName"] == task_name(obj, qid)
    task = client.get_task(request=tasks_v2.GetTaskRequest(
        name=obj["status"]["taskName"], response_view=tasks_v2.Task.View.FULL))
    request = task.http_request
    assert request.url == "https://target.googleapis.com/v1/things?size=4"
    assert request.http_method == tasks_v2.HttpMethod.POST
    assert request.headers["Content-Type"] == "application/json"
    assert request.body == b'{"size":4}'
    assert tasks_in(client, qid) == [obj["status"]["taskName"]]


def test_a_task_created_before_a_crash_is_found_not_created_again(
    operator: Operator, gtask: Objects, namespace: str, client: tasks_v2.CloudTasksClient
) -> None:
    """The crash story, staged: the task already exists under the object's derived name
    (as if the operator died after CreateTask); the operator must take it over."""
    qid = queue_id()
    make_queue(client, qid)
    operator.stop()
    try:
        obj = gtask.create(namespace, sample("crashed", qid))
        name = task_name(obj, qid)
        client.create_task(parent=f"{PARENT}/queues/{qid}", task=tasks_v2.Task(
            name=name, schedule_time=datetime.datetime.now(datetime.UTC)
            + datetime.timedelta(hours=1),
            http_request=tasks_v2.HttpRequest(url="https://target.googleapis.com/v1/things")))
    finally:
        operator.start()
    done = wait_reason(gtask, namespace, "crashed", "Created")
    assert done["status"]["taskName"] == name
    assert tasks_in(client, qid) == [name]  # exactly one task


def test_delete_removes_a_queued_task_and_abandon_keeps_it(
    operator: Operator, gtask: Objects, namespace: str, client: tasks_v2.CloudTasksClient
) -> None:
    qid = queue_id()
    make_queue(client, qid)
    gtask.create(namespace, sample("doomed", qid))
    gtask.create(namespace, sample("kept", qid, deletionPolicy="Abandon"))
    doomed = wait_reason(gtask, namespace, "doomed", "Created")["status"]["taskName"]
    kept = wait_reason(gtask, namespace, "kept", "Created")["status"]["taskName"]
    gtask.delete(namespace, "doomed")
    gtask.delete(namespace, "kept")
    wait_for(lambda: gtask.get(namespace, "doomed") is None, timeout=60, what="doomed gone")
    wait_for(lambda: gtask.get(namespace, "kept") is None, timeout=60, what="kept gone")
    assert not exists(client, doomed)
    assert exists(client, kept)


def test_delete_and_recreate_makes_a_new_task(
    operator: Operator, gtask: Objects, namespace: str, client: tasks_v2.CloudTasksClient
) -> None:
    qid = queue_id()
    make_queue(client, qid)
    gtask.create(namespace, sample("again", qid))
    first = wait_reason(gtask, namespace, "again", "Created")["status"]["taskName"]
    gtask.delete(namespace, "again")
    wait_for(lambda: gtask.get(namespace, "again") is None, timeout=60, what="first gone")
    gtask.create(namespace, sample("again", qid))
    second = wait_reason(gtask, namespace, "again", "Created")["status"]["taskName"]
    assert second != first
    assert tasks_in(client, qid) == [second]


def test_a_missing_queue_is_reported_and_the_task_follows_once_it_exists(
    operator: Operator, gtask: Objects, namespace: str, client: tasks_v2.CloudTasksClient
) -> None:
    qid = queue_id()
    gtask.create(namespace, sample("waiting", qid))
    waiting = wait_reason(gtask, namespace, "waiting", "QueueNotFound")
    assert qid in condition(waiting, "Ready")["message"]
    make_queue(client, qid)
    done = wait_reason(gtask, namespace, "waiting", "Created")
    assert tasks_in(client, qid) == [done["status"]["taskName"]]
