"""GcpTask end to end: apply -> one Cloud Task -> dispatch -> outcome in status.

Runs the operator process against the real API server and the emulator's Cloud Tasks;
asserts on what the emulator holds (official Cloud Tasks client, admin attempt history),
on what the recording target received, and on the object's status and events. In Direct
delivery Cloud Tasks deletes a task right after a 2xx and after its last failed attempt,
so the operator never observes a success: the tests show that such tasks end `Unknown`
with reason `CompletedOutcomeUnknown`, never a guessed `Succeeded`.

The helpers here are imported by the other test_gcptask modules.
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.cloud import tasks_v2
from kubernetes import client as k8s_client
from tests.integration.conftest import (
    CLUSTER,
    LOCATION,
    PROJECT,
    TARGET_HOST,
    Emulator,
    Objects,
    Target,
    condition,
    events_for,
    wait_for,
)

from gcpcall.api import naming

pytestmark = pytest.mark.usefixtures("operator")

TASKS_SERVICE = "google.cloud.tasks.v2.CloudTasks"
RUNNER = "runner@test-project.iam.gserviceaccount.com"
LOCATION_NAME = f"projects/{PROJECT}/locations/{LOCATION}"


# --- helpers (shared with the other test_gcptask modules) --------------------------------


def rfc3339(when: datetime.datetime) -> str:
    return when.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def later(seconds: float) -> str:
    """A scheduleTime `seconds` from now."""
    return rfc3339(datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds))


def queue_path(queue_id: str) -> str:
    return f"{LOCATION_NAME}/queues/{queue_id}"


def make_queue(
    emulator: Emulator, queue_id: str, *, backoff: float = 0.1, max_attempts: int = 0,
    paused: bool = False,
) -> str:
    """A Cloud Tasks queue made with the official client (retry backoff fixed at `backoff`)."""
    client = emulator.tasks()
    retry = tasks_v2.RetryConfig(
        max_attempts=max_attempts,
        min_backoff=datetime.timedelta(seconds=backoff),
        max_backoff=datetime.timedelta(seconds=backoff),
    )
    name = queue_path(queue_id)
    client.create_queue(parent=LOCATION_NAME, queue=tasks_v2.Queue(name=name, retry_config=retry))
    if paused:
        client.pause_queue(name=name)
    return name


def sample(name: str, queue: str, path: str, **spec: Any) -> dict[str, Any]:
    """A GcpTask calling https://target.googleapis.com<path> (the recorder) through `queue`."""
    body: dict[str, Any] = {
        "queue": queue,
        "target": {
            "uri": f"https://{TARGET_HOST}{path}?size=4",
            "method": "POST",
            "headers": [
                {"name": "Content-Type", "value": "application/json"},
                {"name": "X-Team", "value": "team-a"},
            ],
            "body": {"json": {"size": 4}},
            "auth": {"oauth": {}, "serviceAccountEmail": RUNNER},
        },
        "dispatchDeadlineSeconds": 45,
    }
    body.update(spec)
    return {
        "apiVersion": "gcpcall.dev/v1alpha1",
        "kind": "GcpTask",
        "metadata": {"name": name},
        "spec": body,
    }


def expected_task_name(obj: dict[str, Any], queue: str) -> str:
    meta = obj["metadata"]
    return naming.task_name(PROJECT, LOCATION, queue, CLUSTER, meta["namespace"], meta["name"],
                            meta["uid"])


def wait_status(gtask: Objects, namespace: str, name: str, what: str,
                check: Any, timeout: float = 30.0) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        obj = gtask.get(namespace, name)
        return obj if obj and check(obj) else None

    return dict(wait_for(probe, timeout=timeout, interval=0.2, what=f"{name}: {what}"))


def wait_phase(gtask: Objects, namespace: str, name: str, phase: str,
               timeout: float = 30.0) -> dict[str, Any]:
    return wait_status(gtask, namespace, name, f"phase {phase}",
                       lambda o: (o.get("status") or {}).get("phase") == phase, timeout)


def wait_ready(gtask: Objects, namespace: str, name: str, reason: str) -> dict[str, Any]:
    return wait_status(gtask, namespace, name, f"Ready reason {reason}",
                       lambda o: condition(o, "Ready").get("reason") == reason)


def reasons(gtask: Objects, namespace: str, name: str) -> list[str]:
    return [e["reason"] for e in events_for(gtask.api.api_client, namespace, name)]


def expect_events(gtask: Objects, namespace: str, name: str, *wanted: str) -> None:
    """Wait for events of these reasons (the operator posts events in the background)."""
    wait_for(lambda: set(wanted) <= set(reasons(gtask, namespace, name)), timeout=10,
             what=f"events {wanted} of {name}")


def tasks_calls(emulator: Emulator, method: str | None = None) -> list[dict[str, Any]]:
    """Cloud Tasks calls in the emulator's log (of every caller), optionally of one method."""
    return [c for c in emulator.calls(method) if c["service"] == TASKS_SERVICE]


def history(emulator: Emulator, task_name: str) -> dict[str, Any]:
    """Every attempt the emulator made for a task, also after Cloud Tasks deleted it."""
    return dict(emulator.admin("GET", f"/tasks/attempts?task={task_name}"))


def task_exists(emulator: Emulator, task_name: str) -> bool:
    try:
        emulator.tasks().get_task(name=task_name)
    except gexc.NotFound:
        return False
    return True


def gone(gtask: Objects, namespace: str, name: str, timeout: float = 30.0) -> None:
    wait_for(lambda: gtask.get(namespace, name) is None, timeout=timeout,
             what=f"{name} deleted")


# --- stories -------------------------------------------------------------------------------


def test_apply_creates_the_task_dispatches_it_and_reports_an_unobserved_success(
    gtask: Objects, namespace: str, emulator: Emulator, target: Target
) -> None:
    queue = namespace
    make_queue(emulator, queue)
    path = f"/gtask/{namespace}/launch"
    when = later(6)
    created = gtask.create(namespace, sample("launch", queue, path, scheduleTime=when))

    obj = wait_phase(gtask, namespace, "launch", "Queued")
    status = obj["status"]
    task_name = expected_task_name(created, queue)
    assert status["taskName"] == task_name
    assert status["scheduleTime"] == when
    assert status["dispatchCount"] == 0
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    ready = condition(obj, "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Created")
    succeeded = condition(obj, "Succeeded")
    assert (succeeded["status"], succeeded["reason"]) == ("Unknown", "Queued")
    expect_events(gtask, namespace, "launch", "Created")

    # every spec field is mapped onto the task
    task = emulator.tasks().get_task(request=tasks_v2.GetTaskRequest(
        name=task_name, response_view=tasks_v2.Task.View.FULL))
    http = task.http_request
    assert http.url == f"https://{TARGET_HOST}{path}?size=4"
    assert http.http_method == tasks_v2.HttpMethod.POST
    assert http.headers["Content-Type"] == "application/json"
    assert http.headers["X-Team"] == "team-a"
    assert http.body == b'{"size":4}'
    assert http.oauth_token.service_account_email == RUNNER
    assert http.oauth_token.scope == "https://www.googleapis.com/auth/cloud-platform"
    assert task.dispatch_deadline == datetime.timedelta(seconds=45)
    assert rfc3339(task.schedule_time) == when

    # dispatched at its scheduleTime, once, as specified
    received = wait_for(lambda: target.received(path), timeout=20, what="the dispatch")
    assert len(received) == 1
    call = received[0]
    assert call.method == "POST"
    assert call.body == b'{"size":4}'
    assert call.headers["X-Team"] == "team-a"
    assert call.headers["Authorization"].startswith("Bearer ")
    assert call.headers["X-CloudTasks-TaskName"] == task_name.rsplit("/", 1)[1]

    # the target answered 200 and Cloud Tasks deleted the task: nobody saw the success
    obj = wait_phase(gtask, namespace, "launch", "Unknown")
    succeeded = condition(obj, "Succeeded")
    assert (succeeded["status"], succeeded["reason"]) == ("Unknown", "CompletedOutcomeUnknown")
    assert "Direct delivery" in succeeded["message"]
    assert obj["status"]["completionTime"]
    assert condition(obj, "Ready")["status"] == "True"
    assert history(emulator, task_name)["outcome"] == "succeeded"
    expect_events(gtask, namespace, "launch", "Finished")

    # deleting a finished GcpTask calls nothing in Google Cloud
    deletes = len(tasks_calls(emulator, "DeleteTask"))
    gtask.delete(namespace, "launch")
    gone(gtask, namespace, "launch")
    assert len(tasks_calls(emulator, "DeleteTask")) == deletes
    assert len(target.received(path)) == 1


def test_failing_twice_then_succeeding_counts_the_observed_attempts(
    gtask: Objects, namespace: str, emulator: Emulator, target: Target
) -> None:
    queue = namespace
    make_queue(emulator, queue, backoff=3.0, max_attempts=10)
    path = f"/gtask/{namespace}/flaky"
    target.answer(path, 503, 503)
    gtask.create(namespace, sample("flaky", queue, path))

    # the poller sees the failed attempts while Cloud Tasks retries
    obj = wait_status(gtask, namespace, "flaky", "a failed attempt observed",
                      lambda o: ((o.get("status") or {}).get("lastAttempt") or {}).get("code")
                      == 14)
    assert obj["status"]["phase"] == "Running"
    assert obj["status"]["dispatchCount"] >= 1
    assert obj["status"]["firstAttemptTime"]
    assert condition(obj, "Succeeded")["reason"] == "Running"

    obj = wait_phase(gtask, namespace, "flaky", "Unknown")
    status = obj["status"]
    task_name = status["taskName"]
    assert len(target.received(path)) == 3
    runs = history(emulator, task_name)
    assert [a["http_status"] for a in runs["attempts"]] == [503, 503, 200]
    assert runs["outcome"] == "succeeded"
    # the last attempt the operator saw failed with 503; the third one was never seen
    assert 1 <= status["dispatchCount"] <= 2
    assert status["lastAttempt"]["code"] == 14
    assert "UNAVAILABLE" in status["lastAttempt"]["message"]
    succeeded = condition(obj, "Succeeded")
    assert (succeeded["status"], succeeded["reason"]) == ("Unknown", "CompletedOutcomeUnknown")
    assert "UNAVAILABLE" in succeeded["message"]
    expect_events(gtask, namespace, "flaky", "Dispatched", "AttemptFailed")


def test_delete_and_recreate_with_the_same_name_makes_a_new_task(
    gtask: Objects, namespace: str, emulator: Emulator, target: Target
) -> None:
    queue = namespace
    make_queue(emulator, queue)
    path = f"/gtask/{namespace}/again"
    first = gtask.create(namespace, sample("again", queue, path))
    obj = wait_phase(gtask, namespace, "again", "Unknown")
    old_name = obj["status"]["taskName"]
    gtask.delete(namespace, "again")
    gone(gtask, namespace, "again")

    second = gtask.create(namespace, sample("again", queue, path))
    assert second["metadata"]["uid"] != first["metadata"]["uid"]
    obj = wait_phase(gtask, namespace, "again", "Unknown")
    assert obj["status"]["taskName"] == expected_task_name(second, queue) != old_name
    assert condition(obj, "Ready")["reason"] == "Created"
    assert len(target.received(path)) == 2


def test_spec_edits_are_refused_with_create_a_new_object(
    gtask: Objects, namespace: str, emulator: Emulator
) -> None:
    make_queue(emulator, namespace)
    gtask.create(namespace, sample("fixed", namespace, f"/gtask/{namespace}/fixed",
                                   scheduleTime=later(600)))
    wait_phase(gtask, namespace, "fixed", "Queued")
    with pytest.raises(k8s_client.ApiException) as refused:
        gtask.patch(namespace, "fixed", {"spec": {"dispatchDeadlineSeconds": 60}})
    assert refused.value.status == 422
    assert "create a new GcpTask" in str(refused.value.body)


def test_missing_queue_is_reported_and_the_task_goes_through_once_it_exists(
    gtask: Objects, namespace: str, emulator: Emulator, target: Target
) -> None:
    queue = namespace
    path = f"/gtask/{namespace}/later"
    refusals = len(tasks_calls(emulator, "CreateTask"))
    gtask.create(namespace, sample("later", queue, path))
    obj = wait_ready(gtask, namespace, "later", "QueueNotFound")
    ready = condition(obj, "Ready")
    assert ready["status"] == "False"
    assert queue_path(queue) in ready["message"]
    assert obj["status"]["phase"] == "Pending"
    expect_events(gtask, namespace, "later", "QueueNotFound")

    make_queue(emulator, queue)
    obj = wait_phase(gtask, namespace, "later", "Unknown")
    assert condition(obj, "Ready")["reason"] == "Created"
    assert len(target.received(path)) == 1
    # the wait was one GetQueue per check, not a CreateTask retried per object
    creates = tasks_calls(emulator, "CreateTask")[refusals:]
    assert [c["code"] for c in creates].count("FAILED_PRECONDITION") == 1


def test_paused_queue_keeps_the_task_queued_until_it_resumes(
    gtask: Objects, namespace: str, emulator: Emulator, target: Target
) -> None:
    queue = make_queue(emulator, namespace, paused=True)
    path = f"/gtask/{namespace}/paused"
    gtask.create(namespace, sample("paused", namespace, path))
    obj = wait_phase(gtask, namespace, "paused", "Queued")
    assert "paused" in condition(obj, "Succeeded")["message"]
    assert not target.received(path)

    emulator.tasks().resume_queue(name=queue)
    wait_for(lambda: target.received(path), timeout=20, what="the dispatch after resume")
    wait_phase(gtask, namespace, "paused", "Unknown")
    assert len(target.received(path)) == 1


def test_ttl_seconds_after_finished_removes_the_object(
    gtask: Objects, namespace: str, emulator: Emulator, target: Target
) -> None:
    make_queue(emulator, namespace)
    path = f"/gtask/{namespace}/ttl"
    gtask.create(namespace, sample("short-lived", namespace, path, ttlSecondsAfterFinished=2))
    wait_for(lambda: target.received(path), what="the dispatch")
    gone(gtask, namespace, "short-lived")
    assert len(target.received(path)) == 1


def test_deletion_policy_delete_removes_the_queued_task(
    gtask: Objects, namespace: str, emulator: Emulator
) -> None:
    make_queue(emulator, namespace)
    gtask.create(namespace, sample("doomed", namespace, f"/gtask/{namespace}/doomed",
                                   scheduleTime=later(600)))
    obj = wait_phase(gtask, namespace, "doomed", "Queued")
    task_name = obj["status"]["taskName"]
    gtask.delete(namespace, "doomed")
    gone(gtask, namespace, "doomed")
    assert not task_exists(emulator, task_name)
    assert history(emulator, task_name)["outcome"] == "deleted"
    expect_events(gtask, namespace, "doomed", "Deleted")


def test_deletion_policy_abandon_leaves_the_task_to_run(
    gtask: Objects, namespace: str, emulator: Emulator
) -> None:
    make_queue(emulator, namespace)
    deletes = len(tasks_calls(emulator, "DeleteTask"))
    gtask.create(namespace, sample("kept", namespace, f"/gtask/{namespace}/kept",
                                   scheduleTime=later(600), deletionPolicy="Abandon"))
    obj = wait_phase(gtask, namespace, "kept", "Queued")
    task_name = obj["status"]["taskName"]
    gtask.delete(namespace, "kept")
    gone(gtask, namespace, "kept")
    assert task_exists(emulator, task_name)
    assert len(tasks_calls(emulator, "DeleteTask")) == deletes
    expect_events(gtask, namespace, "kept", "Abandoned")
    emulator.tasks().delete_task(name=task_name)  # tidy: it would run in ten minutes


@pytest.mark.parametrize(("code", "reason"), [
    ("PERMISSION_DENIED", "DeletionBlocked"),  # a person must act
    ("UNAVAILABLE", "Deleting"),  # retrying alone fixes it
])
def test_a_delete_google_does_not_take_holds_the_object_until_it_does(
    gtask: Objects, namespace: str, emulator: Emulator, code: str, reason: str
) -> None:
    name = f"held-{reason.lower()}"
    make_queue(emulator, namespace)
    gtask.create(namespace, sample(name, namespace, f"/gtask/{namespace}/{name}",
                                   scheduleTime=later(600)))
    task_name = wait_phase(gtask, namespace, name, "Queued")["status"]["taskName"]
    emulator.fault("DeleteTask", code)
    try:
        gtask.delete(namespace, name)
        obj = wait_ready(gtask, namespace, name, reason)
        assert code in condition(obj, "Ready")["message"]
        assert obj["metadata"]["finalizers"]  # kept until the task is really gone
        assert task_exists(emulator, task_name)
    finally:
        emulator.clear_faults()
    gone(gtask, namespace, name, timeout=60)
    assert not task_exists(emulator, task_name)
    expect_events(gtask, namespace, name, reason)


def test_a_blocked_deletion_is_released_with_abandon(
    gtask: Objects, namespace: str, emulator: Emulator
) -> None:
    """deletionPolicy stays mutable on a GcpTask, so a DeletionBlocked task is released
    the way a ScheduledGcpCall is: switch to Abandon, and the task is left to run."""
    make_queue(emulator, namespace)
    gtask.create(namespace, sample("stuck", namespace, f"/gtask/{namespace}/stuck",
                                   scheduleTime=later(600)))
    task_name = wait_phase(gtask, namespace, "stuck", "Queued")["status"]["taskName"]
    emulator.fault("DeleteTask", "PERMISSION_DENIED")
    try:
        gtask.delete(namespace, "stuck")
        wait_ready(gtask, namespace, "stuck", "DeletionBlocked")
        deletes = len(tasks_calls(emulator, "DeleteTask"))
        gtask.patch(namespace, "stuck", {"spec": {"deletionPolicy": "Abandon"}})
        gone(gtask, namespace, "stuck", timeout=15)
        assert len(tasks_calls(emulator, "DeleteTask")) == deletes  # released, not retried
    finally:
        emulator.clear_faults()
    assert task_exists(emulator, task_name)  # left to run, as Abandon says
    expect_events(gtask, namespace, "stuck", "DeletionBlocked", "Abandoned")
    emulator.tasks().delete_task(name=task_name)


def test_a_slow_create_shows_creating_then_created(
    gtask: Objects, namespace: str, emulator: Emulator
) -> None:
    make_queue(emulator, namespace)
    emulator.slow("CreateTask", 8)
    try:
        gtask.create(namespace, sample("slow", namespace, f"/gtask/{namespace}/slow",
                                       scheduleTime=later(600)))
        obj = wait_ready(gtask, namespace, "slow", "Creating")
        assert condition(obj, "Ready")["status"] == "False"
        assert obj["status"]["phase"] == "Pending"
    finally:
        emulator.clear_faults()
    obj = wait_ready(gtask, namespace, "slow", "Created")
    assert obj["status"]["phase"] == "Queued"

