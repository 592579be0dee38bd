"""The Argo CD health checks and the run-now action, run by a real Lua 5.1 on sample objects.

Why: Argo CD shows no health at all for a kind it does not know, and a health script that
errors shows as a failed assessment; the scripts in helm/gcpcall-operator/argocd/ are code,
so they are run here on every status shape the operator writes (api.md). docs/argocd.md
embeds the same scripts in its argocd-cm snippet; that copy is checked too.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.argocd_lua import ArgoLua, script

DOCS = Path(__file__).resolve().parents[2] / "docs" / "argocd.md"
SGC_HEALTH = "health-ScheduledGcpCall.lua"
TASK_HEALTH = "health-GcpTask.lua"
DISCOVERY = "action-discovery-ScheduledGcpCall.lua"
RUN_NOW = "action-run-now-ScheduledGcpCall.lua"
JOB = "projects/p/locations/l/jobs/c_ns_nightly"


def cond(type_: str, status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2026-11-22T10:00:00Z",
    }


def sgc(status: dict[str, Any] | None, generation: int | None = 3, **meta: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "nightly", "namespace": "team-a", **meta}
    if generation is not None:
        metadata["generation"] = generation
    obj: dict[str, Any] = {
        "apiVersion": "gcpcall.dev/v1alpha1",
        "kind": "ScheduledGcpCall",
        "metadata": metadata,
        "spec": {"schedule": "5 * * * *"},
    }
    if status is not None:
        obj["status"] = status
    return obj


def synced(*conditions: dict[str, Any], generation: int = 3) -> dict[str, Any]:
    return {
        "observedGeneration": generation,
        "conditions": list(conditions),
        "jobName": JOB,
        "state": "ENABLED",
    }


UP = cond("Ready", "True", "UpToDate")
NO_RUN = cond("LastRunSucceeded", "Unknown", "NoRunYet")


@pytest.fixture(scope="module")
def lua() -> ArgoLua:
    return ArgoLua()


@pytest.mark.parametrize(
    ("obj", "health", "message_part"),
    [
        pytest.param(sgc(None), "Progressing", "operator", id="no-status"),
        pytest.param(
            sgc(synced(UP, NO_RUN, generation=2)),
            "Progressing",
            "generation 3",
            id="generation-behind",
        ),
        pytest.param(
            sgc({"conditions": [UP]}), "Progressing", "generation 3", id="no-observed-generation"
        ),
        pytest.param(sgc(synced(NO_RUN)), "Progressing", "", id="ready-missing"),
        pytest.param(
            sgc(synced(cond("Ready", "Unknown", "Reconciling", "starting"))),
            "Progressing",
            "starting",
            id="ready-unknown",
        ),
        pytest.param(
            sgc(synced(cond("Ready", "False", "Creating"))),
            "Progressing",
            "Creating",
            id="creating",
        ),
        pytest.param(
            sgc(synced(cond("Ready", "False", "Updating"))),
            "Progressing",
            "Updating",
            id="updating",
        ),
        pytest.param(
            sgc(synced(cond("Ready", "False", "BodySourceNotFound", "Secret 'x' does not exist"))),
            "Progressing",
            "BodySourceNotFound",
            id="waiting-for-the-body-secret",
        ),
        pytest.param(
            sgc(synced(UP, cond("LastRunSucceeded", "Unknown", "OperationRunning",
                                "operation op-1 is running"))),
            "Progressing",
            "operation op-1 is running",
            id="operation-running",
        ),
        pytest.param(
            sgc(
                synced(cond("Ready", "False", "Deleting")), deletionTimestamp="2026-11-22T10:00:00Z"
            ),
            "Progressing",
            "Deleting",
            id="deleting",
        ),
        pytest.param(
            sgc(
                synced(
                    cond(
                        "Ready",
                        "False",
                        "InvalidSpec",
                        "spec.timeZone: unknown time zone 'Mars/Olympus'",
                    )
                )
            ),
            "Degraded",
            "spec.timeZone",
            id="invalid-spec",
        ),
        pytest.param(
            sgc(
                synced(
                    cond(
                        "Ready",
                        "False",
                        "IdentityNotReady",
                        'ServiceAccount "x" not found in namespace "team-a"',
                    )
                )
            ),
            "Degraded",
            "IdentityNotReady",
            id="identity",
        ),
        pytest.param(
            sgc(synced(cond("Ready", "False", "PermissionDenied", "403"))),
            "Degraded",
            "PermissionDenied",
            id="permission-denied",
        ),
        pytest.param(
            sgc(synced(cond("Ready", "False", "GcpError", "UNAVAILABLE"))),
            "Degraded",
            "UNAVAILABLE",
            id="gcp-error",
        ),
        pytest.param(
            sgc(
                synced(cond("Ready", "False", "DeletionBlocked", "PERMISSION_DENIED")),
                deletionTimestamp="2026-11-22T10:00:00Z",
            ),
            "Degraded",
            "DeletionBlocked",
            id="deletion-blocked",
        ),
        pytest.param(sgc(synced(UP, NO_RUN)), "Healthy", JOB, id="up-to-date-no-run"),
        pytest.param(
            sgc(synced(UP, cond("LastRunSucceeded", "True", "Succeeded", "HTTP 200"))),
            "Healthy",
            JOB,
            id="last-run-succeeded",
        ),
        pytest.param(
            sgc(
                synced(
                    UP,
                    cond(
                        "LastRunSucceeded",
                        "False",
                        "TargetError",
                        "HTTP 403 PERMISSION_DENIED from compute",
                    ),
                )
            ),
            "Degraded",
            "Last run failed: TargetError: HTTP 403",
            id="last-run-failed",
        ),
        pytest.param(
            sgc(synced(UP, cond("LastRunSucceeded", "False", "OperationFailed", "x"))),
            "Degraded",
            "OperationFailed",
            id="operation-failed",
        ),
        pytest.param(
            sgc(synced(cond("Ready", "True", "Paused"), NO_RUN)), "Suspended", "paused", id="paused"
        ),
        pytest.param(
            sgc(
                synced(
                    cond("Ready", "True", "Paused"),
                    cond("LastRunSucceeded", "False", "DeadlineExceeded"),
                )
            ),
            "Degraded",
            "DeadlineExceeded",
            id="paused-after-failed-run",
        ),
        pytest.param(sgc(synced(UP, NO_RUN), generation=None), "Healthy", JOB, id="no-generation"),
    ],
)
def test_scheduled_call_health(
    lua: ArgoLua, obj: dict[str, Any], health: str, message_part: str
) -> None:
    status, message = lua.health(script(SGC_HEALTH), obj)
    assert status == health
    assert message_part in message


def task(phase: str | None, *conditions: dict[str, Any], **status: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "gcpcall.dev/v1alpha1",
        "kind": "GcpTask",
        "metadata": {"name": "launch", "namespace": "team-a", "generation": 1},
        "spec": {"queue": "etl"},
    }
    if phase is not None:
        obj["status"] = {
            "observedGeneration": 1,
            "phase": phase,
            "conditions": list(conditions),
            **status,
        }
    return obj


CREATED = cond("Ready", "True", "Created")
FAILED_ATTEMPT = {
    "attemptTime": "2026-11-22T10:00:00Z",
    "code": 14,
    "httpStatus": 503,
    "message": "HTTP 503",
}


@pytest.mark.parametrize(
    ("obj", "health", "message_part"),
    [
        pytest.param(task(None), "Progressing", "operator", id="no-status"),
        pytest.param(
            task("Pending", cond("Succeeded", "Unknown", "Pending", "the task is not created yet")),
            "Progressing",
            "not created",
            id="pending",
        ),
        pytest.param(
            task("Pending", cond("Ready", "False", "GcpError", "UNAVAILABLE")),
            "Progressing",
            "Pending",
            id="pending-transient-error",
        ),
        pytest.param(
            task(
                "Pending", cond("Ready", "False", "InvalidSpec", "spec.target.body.fromSecret: ...")
            ),
            "Degraded",
            "InvalidSpec: spec.target.body.fromSecret",
            id="invalid-spec",
        ),
        pytest.param(
            task("Pending", cond("Ready", "False", "QueueNotFound", "queue etl")),
            "Degraded",
            "QueueNotFound",
            id="queue-not-found",
        ),
        pytest.param(
            task("Pending", cond("Ready", "False", "IdentityNotReady", "STS")),
            "Degraded",
            "IdentityNotReady",
            id="identity",
        ),
        pytest.param(
            task(
                "Queued",
                CREATED,
                cond("Succeeded", "Unknown", "Queued", "waiting for its schedule time"),
            ),
            "Progressing",
            "Queued: waiting for its schedule time",
            id="queued",
        ),
        pytest.param(
            task(
                "Running",
                CREATED,
                cond("Succeeded", "Unknown", "Running", "2 attempt(s); HTTP 503"),
                dispatchCount=2,
                lastAttempt=FAILED_ATTEMPT,
            ),
            "Progressing",
            "Running",
            id="running-retrying",
        ),
        pytest.param(
            task("Succeeded", CREATED, cond("Succeeded", "True", "Succeeded", "HTTP 200")),
            "Healthy",
            "Succeeded: HTTP 200",
            id="succeeded",
        ),
        pytest.param(
            task(
                "Failed",
                CREATED,
                cond("Succeeded", "False", "TargetError", "all 3 attempts failed; HTTP 503"),
            ),
            "Degraded",
            "all 3 attempts failed",
            id="failed",
        ),
        pytest.param(
            task(
                "Failed",
                CREATED,
                cond("Succeeded", "False", "OperationFailed", "operation o: quota"),
            ),
            "Degraded",
            "OperationFailed",
            id="operation-failed",
        ),
        pytest.param(
            task(
                "Unknown",
                CREATED,
                cond(
                    "Succeeded",
                    "Unknown",
                    "CompletedOutcomeUnknown",
                    "the task finished ... (no attempt was observed)",
                ),
            ),
            "Healthy",
            "CompletedOutcomeUnknown",
            id="unknown-no-failure-seen",
        ),
        pytest.param(
            task(
                "Unknown",
                CREATED,
                cond("Succeeded", "Unknown", "CompletedOutcomeUnknown", "HTTP 503"),
                lastAttempt=FAILED_ATTEMPT,
                dispatchCount=1,
            ),
            "Degraded",
            "CompletedOutcomeUnknown",
            id="unknown-after-failure",
        ),
        pytest.param(
            task("Unknown", CREATED, lastAttempt={"code": 0}),
            "Healthy",
            "outcome unknown",
            id="unknown-no-condition",
        ),
    ],
)
def test_task_health(lua: ArgoLua, obj: dict[str, Any], health: str, message_part: str) -> None:
    status, message = lua.health(script(TASK_HEALTH), obj)
    assert status == health
    assert message_part in message


def test_run_now_sets_a_fresh_utc_timestamp_and_keeps_everything_else(lua: ArgoLua) -> None:
    obj = sgc(synced(UP, NO_RUN))
    obj["metadata"]["annotations"] = {"team": "a", "gcpcall.dev/run-requested-at": "old"}
    obj["metadata"]["finalizers"] = ["gcpcall.dev/finalizer"]
    before = datetime.now(UTC).replace(microsecond=0)
    out = lua.run(script(RUN_NOW), obj)
    after = datetime.now(UTC)
    stamp = out["metadata"]["annotations"]["gcpcall.dev/run-requested-at"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", stamp)
    assert before <= datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC) <= after
    assert out["metadata"]["annotations"]["team"] == "a"
    assert out["metadata"]["finalizers"] == ["gcpcall.dev/finalizer"]
    assert out["spec"] == obj["spec"]
    assert out["status"]["jobName"] == JOB


def test_run_now_on_an_object_without_annotations(lua: ArgoLua) -> None:
    out = lua.run(script(RUN_NOW), sgc(None))
    assert set(out["metadata"]["annotations"]) == {"gcpcall.dev/run-requested-at"}


def test_run_now_is_offered_except_while_deleting(lua: ArgoLua) -> None:
    assert lua.run(script(DISCOVERY), sgc(None)) == {"run-now": {"disabled": False}}
    deleting = sgc(None, deletionTimestamp="2026-11-22T10:00:00Z")
    assert lua.run(script(DISCOVERY), deleting) == {"run-now": {"disabled": True}}


def argocd_cm() -> dict[str, str]:
    blocks = re.findall(r"```yaml\n(.*?)```", DOCS.read_text(), flags=re.DOTALL)
    docs = [yaml.safe_load(b) for b in blocks]
    cms = [d for d in docs if d.get("kind") == "ConfigMap" and d["metadata"]["name"] == "argocd-cm"]
    assert len(cms) == 1, "docs/argocd.md has one argocd-cm snippet"
    return dict(cms[0]["data"])


def test_docs_snippet_carries_exactly_the_chart_scripts() -> None:
    data = argocd_cm()
    assert data["resource.customizations.health.gcpcall.dev_ScheduledGcpCall"] == script(SGC_HEALTH)
    assert data["resource.customizations.health.gcpcall.dev_GcpTask"] == script(TASK_HEALTH)
    actions = yaml.safe_load(data["resource.customizations.actions.gcpcall.dev_ScheduledGcpCall"])
    assert actions["discovery.lua"] == script(DISCOVERY)
    assert [d["name"] for d in actions["definitions"]] == ["run-now"]
    assert actions["definitions"][0]["action.lua"] == script(RUN_NOW)
