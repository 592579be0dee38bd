"""GcpTask across operator crashes and restarts: exactly once, nothing guessed, cheap resumes.

Why a module of its own: these stories kill and restart the operator, so they run their
own operator process, with the session's operator stopped for the module's duration (two
operators must never handle the same objects at once).

The crash window is made deterministic without any hook in the operator: the emulator
delays GetQueue, which the operator calls right after CreateTask (for a queue it has not
read yet) and before its first status write, and the test kills the operator with SIGKILL
as soon as the emulator's call log shows the CreateTask.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as k8s_client
from tests.conftest import ControlPlane
from tests.integration.conftest import (
    Emulator,
    Objects,
    Operator,
    Target,
    condition,
    events_for,
    operator_env,
    wait_for,
)
from tests.integration.test_gcptask_lifecycle import (
    expected_task_name,
    history,
    later,
    make_queue,
    rfc3339,
    sample,
    tasks_calls,
    wait_phase,
    wait_ready,
)


@pytest.fixture(scope="module")
def own_operator(
    operator: Operator, controlplane: ControlPlane, emulator: Emulator, target: Target,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Operator]:
    operator.stop()
    mine = Operator(operator_env(controlplane, emulator),
                    tmp_path_factory.mktemp("gcptask-restart") / "operator.log")
    mine.start()
    try:
        yield mine
    finally:
        mine.stop()
        emulator.clear_faults()
        operator.start()


def slow_get_queue(emulator: Emulator, seconds: float) -> None:
    """Delay every GetQueue (and fail none): the window between CreateTask and status."""
    emulator.admin("POST", "/faults", {"method": "GetQueue", "code": "UNAVAILABLE", "rate": 0.0,
                                       "latency_seconds": seconds})


def kill_right_after_create_task(op: Operator, emulator: Emulator, since: int) -> None:
    wait_for(lambda: any(c["code"] == "OK" for c in tasks_calls(emulator, "CreateTask")[since:]),
             interval=0.02, what="the operator's CreateTask")
    op.kill()


def creates_since(emulator: Emulator, since: int) -> list[str]:
    return [c["code"] for c in tasks_calls(emulator, "CreateTask")[since:]]


def test_killed_after_create_task_then_restarted_makes_one_task_and_one_dispatch(
    own_operator: Operator, gtask: Objects, namespace: str, emulator: Emulator, target: Target
) -> None:
    queue = make_queue(emulator, namespace)  # a new queue: GetQueue follows the CreateTask
    path = f"/gtask/{namespace}/once"
    since = len(tasks_calls(emulator, "CreateTask"))
    slow_get_queue(emulator, 60)
    try:
        created = gtask.create(namespace, sample("once", namespace, path,
                                                 scheduleTime=later(600)))
        kill_right_after_create_task(own_operator, emulator, since)
    finally:
        emulator.clear_faults()
    assert "taskName" not in ((gtask.get(namespace, "once") or {}).get("status") or {})

    own_operator.start()
    obj = wait_phase(gtask, namespace, "once", "Queued")
    task_name = obj["status"]["taskName"]
    assert task_name == expected_task_name(created, namespace)
    assert condition(obj, "Ready")["reason"] == "Created"
    assert creates_since(emulator, since) == ["OK", "ALREADY_EXISTS"]
    assert [t.name for t in emulator.tasks().list_tasks(parent=queue)] == [task_name]
    wait_for(lambda: any(e["reason"] == "Created" and "created before a restart" in e["message"]
                         for e in events_for(gtask.api.api_client, namespace, "once")),
             what="the Created event (posted in the background)")

    # run it now: it reaches the target once
    emulator.admin("POST", "/tasks/due", {"task": task_name})
    wait_for(lambda: history(emulator, task_name)["outcome"] == "succeeded",
             what="the task ran")
    assert len(target.received(path)) == 1
    assert len(history(emulator, task_name)["attempts"]) == 1


def test_killed_after_create_task_while_the_task_runs_reports_it_finished(
    own_operator: Operator, gtask: Objects, namespace: str, emulator: Emulator, target: Target
) -> None:
    make_queue(emulator, namespace)
    path = f"/gtask/{namespace}/ran"
    since = len(tasks_calls(emulator, "CreateTask"))
    slow_get_queue(emulator, 60)
    try:
        created = gtask.create(namespace, sample("ran", namespace, path))  # due at once
        kill_right_after_create_task(own_operator, emulator, since)
    finally:
        emulator.clear_faults()
    task_name = expected_task_name(created, namespace)
    wait_for(lambda: history(emulator, task_name)["outcome"] == "succeeded",
             what="the task ran while the operator was down")

    own_operator.start()
    # ALREADY_EXISTS, then NOT_FOUND on the GET: it already ran, outcome not observed
    obj = wait_phase(gtask, namespace, "ran", "Unknown")
    assert obj["status"]["taskName"] == task_name
    succeeded = condition(obj, "Succeeded")
    assert (succeeded["status"], succeeded["reason"]) == ("Unknown", "CompletedOutcomeUnknown")
    assert "no attempt was observed" in succeeded["message"]
    assert condition(obj, "Ready")["reason"] == "Created"
    assert creates_since(emulator, since) == ["OK", "ALREADY_EXISTS"]
    assert len(target.received(path)) == 1


def test_success_recorded_in_status_is_succeeded_and_unrecorded_is_unknown(
    own_operator: Operator, gtask: Objects, namespace: str, emulator: Emulator, target: Target
) -> None:
    """The outcome rule both ways: a 2xx recorded in status (as the relay records the
    target's answer) makes the vanished task Succeeded; without it, Unknown."""
    make_queue(emulator, namespace)
    names = {}
    for name in ("seen", "unseen"):
        gtask.create(namespace, sample(name, namespace, f"/gtask/{namespace}/{name}",
                                       scheduleTime=later(600)))
    for name in ("seen", "unseen"):
        names[name] = wait_phase(gtask, namespace, name, "Queued")["status"]["taskName"]

    own_operator.stop()
    for task_name in names.values():
        emulator.admin("POST", "/tasks/due", {"task": task_name})
    for task_name in names.values():
        wait_for(lambda t=task_name: history(emulator, t)["outcome"] == "succeeded",
                 what="both tasks ran")
    attempt = history(emulator, names["seen"])["attempts"][0]
    dispatched = datetime.datetime.fromtimestamp(attempt["dispatch_timestamp"], datetime.UTC)
    k8s_client.CustomObjectsApi(gtask.api.api_client).patch_namespaced_custom_object_status(
        "gcpcall.dev", "v1alpha1", namespace, "gcptasks", "seen",
        {"status": {"lastAttempt": {"attemptTime": rfc3339(dispatched), "code": 0,
                                    "httpStatus": 200}}})
    since = len(tasks_calls(emulator, "CreateTask"))

    own_operator.start()
    obj = wait_phase(gtask, namespace, "seen", "Succeeded")
    succeeded = condition(obj, "Succeeded")
    assert (succeeded["status"], succeeded["reason"]) == ("True", "Succeeded")
    assert obj["status"]["completionTime"]
    obj = wait_phase(gtask, namespace, "unseen", "Unknown")
    succeeded = condition(obj, "Succeeded")
    assert (succeeded["status"], succeeded["reason"]) == ("Unknown", "CompletedOutcomeUnknown")
    wait_for(lambda: "Succeeded" in [e["reason"] for e in events_for(gtask.api.api_client,
                                                                      namespace, "seen")],
             what="the Succeeded event")
    assert "OK" not in creates_since(emulator, since)  # resuming creates nothing


def unfinished_elsewhere(gtask: Objects, namespace: str) -> int:
    items: list[dict[str, Any]] = gtask.api.list_cluster_custom_object(
        "gcpcall.dev", "v1alpha1", "gcptasks")["items"]
    return sum(1 for o in items if o["metadata"]["namespace"] != namespace
               and (o.get("status") or {}).get("phase") in ("Queued", "Running"))


def test_restart_reads_a_queue_of_waiting_tasks_with_one_list_and_writes_nothing(
    own_operator: Operator, gtask: Objects, namespace: str, emulator: Emulator
) -> None:
    make_queue(emulator, namespace)
    names = [f"wait-{i}" for i in range(12)]
    for name in names:
        gtask.create(namespace, sample(name, namespace, f"/gtask/{namespace}/{name}",
                                       scheduleTime=later(600)))
    for name in names:
        wait_phase(gtask, namespace, name, "Queued")
    others = unfinished_elsewhere(gtask, namespace)

    own_operator.stop()
    since = len(emulator.calls())
    own_operator.start()
    wait_for(lambda: any(c["method"] == "ListTasks" for c in emulator.calls()[since:]),
             what="the resumed tasks read")
    time.sleep(2.0)  # let every resumed object settle
    calls = [c for c in emulator.calls()[since:] if c["service"].endswith("CloudTasks")]
    methods = [c["method"] for c in calls]
    assert methods.count("ListTasks") == 1
    # one GetTask at most for each unfinished task of other tests; none for these twelve
    assert methods.count("GetTask") <= others
    assert not [c for c in calls if c["method"] == "CreateTask" and c["code"] == "OK"]
    assert "DeleteTask" not in methods
    for name in names:
        assert (gtask.get(namespace, name) or {})["status"]["phase"] == "Queued"


def test_restart_while_waiting_for_the_queue_reads_only_and_still_creates_later(
    own_operator: Operator, gtask: Objects, namespace: str, emulator: Emulator, target: Target
) -> None:
    path = f"/gtask/{namespace}/patient"
    gtask.create(namespace, sample("patient", namespace, path))
    wait_ready(gtask, namespace, "patient", "QueueNotFound")

    own_operator.stop()
    since = len(tasks_calls(emulator, "CreateTask"))
    reads = len(tasks_calls(emulator, "GetQueue"))
    own_operator.start()
    wait_for(lambda: len(tasks_calls(emulator, "GetQueue")) > reads,
             what="the restarted operator checks the queue")
    assert creates_since(emulator, since) == []  # no CreateTask retried per object

    make_queue(emulator, namespace)
    wait_phase(gtask, namespace, "patient", "Unknown")
    assert creates_since(emulator, since) == ["OK"]
    assert len(target.received(path)) == 1
