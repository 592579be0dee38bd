"""ScheduledGcpCall end to end: apply -> Cloud Scheduler job -> status, through the operator.

Runs the operator process against the real API server and the emulator; asserts on what
the emulator holds (through the official Cloud Scheduler client) and on the object's status.
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from google.cloud import scheduler_v1
from tests.integration.conftest import (
    CLUSTER,
    LOCATION,
    PROJECT,
    TARGET_HOST,
    Emulator,
    Objects,
    condition,
    events_for,
    wait_for,
)

pytestmark = pytest.mark.usefixtures("operator")


def job_name(namespace: str, name: str) -> str:
    job_id = f"{CLUSTER}_{namespace}_{name.replace('.', '_')}"
    return f"projects/{PROJECT}/locations/{LOCATION}/jobs/{job_id}"


def sample(name: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "schedule": "5 * * * *",
        "timeZone": "Europe/Berlin",
        "target": {
            "uri": f"https://{TARGET_HOST}/compute/v1/projects/p/zones/z"
            "/instanceGroupManagers/ig/resize?size=4",
            "method": "POST",
            "headers": [{"name": "Content-Type", "value": "application/json"}],
            "body": {"json": {"size": 4}},
            "auth": {
                "oauth": {"scope": "https://www.googleapis.com/auth/cloud-platform"},
                "serviceAccountEmail": "runner@test-project.iam.gserviceaccount.com",
            },
        },
        "retry": {"retryCount": 2, "minBackoffSeconds": 5, "maxBackoffSeconds": 60},
        "attemptDeadlineSeconds": 120,
    }
    body.update(spec)
    return {
        "apiVersion": "gcpcall.dev/v1alpha1",
        "kind": "ScheduledGcpCall",
        "metadata": {"name": name},
        "spec": body,
    }


def ready(sgc: Objects, namespace: str, name: str, reason: str = "UpToDate") -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = sgc.get(namespace, name)
        c = condition(obj, "Ready")
        gen = (obj or {}).get("metadata", {}).get("generation")
        if c.get("reason") == reason and obj and obj["status"].get("observedGeneration") == gen:
            return obj
        return None

    return dict(wait_for(check, what=f"{name} Ready reason {reason}"))


def test_apply_creates_job_with_every_field(
    sgc: Objects, namespace: str, emulator: Emulator
) -> None:
    sgc.create(namespace, sample("scale-up"))
    obj = ready(sgc, namespace, "scale-up")
    status = obj["status"]
    assert status["jobName"] == job_name(namespace, "scale-up")
    assert status["state"] == "ENABLED"
    assert status["nextRunTime"]
    assert condition(obj, "Ready")["status"] == "True"
    assert condition(obj, "LastRunSucceeded")["reason"] == "NoRunYet"

    job = emulator.scheduler().get_job(name=status["jobName"])
    assert job.schedule == "5 * * * *"
    assert job.time_zone == "Europe/Berlin"
    assert job.http_target.uri.startswith(f"https://{TARGET_HOST}/compute/v1/")
    assert job.http_target.http_method == scheduler_v1.HttpMethod.POST
    assert job.http_target.headers["Content-Type"] == "application/json"
    assert job.http_target.body == b'{"size":4}' or b'"size"' in job.http_target.body
    assert job.http_target.oauth_token.service_account_email == (
        "runner@test-project.iam.gserviceaccount.com")
    assert job.retry_config.retry_count == 2
    assert job.attempt_deadline == datetime.timedelta(seconds=120)
    assert f"managed-by: gcpcall-operator {CLUSTER}/{namespace}/scale-up" in job.description
    reasons = [e["reason"] for e in events_for(sgc.api.api_client, namespace, "scale-up")]
    assert "Created" in reasons

