"""The assembled Emulator: both gRPC services on one port, every HTTP route on the other.

Why: the operator is pointed at one gRPC target and one HTTP base URL; Scheduler, Tasks,
the certs endpoints, the identity services and the admin API must all answer there.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest
from google.api_core import exceptions
from google.cloud import scheduler_v1, tasks_v2

from tests.emulator.conftest import PARENT, RunningEmulator


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def test_scheduler_and_tasks_share_the_grpc_port(
    emulator: RunningEmulator,
    scheduler_client: scheduler_v1.CloudSchedulerClient,
    tasks_client: tasks_v2.CloudTasksClient,
) -> None:
    assert list(scheduler_client.list_jobs(parent=PARENT)) == []
    assert list(tasks_client.list_queues(parent=PARENT)) == []
    with pytest.raises(exceptions.NotFound):
        scheduler_client.get_job(name=f"{PARENT}/jobs/none")
    _, log = emulator.admin("GET", "/calls")
    services = {call["service"] for call in log["calls"]}
    assert "google.cloud.scheduler.v1.CloudScheduler" in services
    assert "google.cloud.tasks.v2.CloudTasks" in services


def test_http_port_serves_certs_discovery_identity_and_admin(emulator: RunningEmulator) -> None:
    base = emulator.http_url
    tokens = emulator.emulator.tokens

    assert get_json(f"{base}/oauth2/v3/certs") == tokens.jwks()
    assert get_json(f"{base}/oauth2/v1/certs") == tokens.pem_certs()
    discovery = get_json(f"{base}/.well-known/openid-configuration")
    assert discovery["issuer"] == tokens.issuer
    assert discovery["jwks_uri"] == f"{base}/oauth2/v3/certs"
    assert get_json(f"{base}/emulator/v1/health") == {
        "grpc_port": emulator.emulator.grpc_port,
        "http_port": emulator.emulator.http_port,
    }
    assert "grants" in get_json(f"{base}/emulator/v1/iam/policy")  # identity services mounted


def test_clock_admin_route_moves_the_clock(emulator: RunningEmulator) -> None:
    _, before = emulator.admin("GET", "/clock")
    status, after = emulator.admin("POST", "/clock/advance", {"seconds": 90})

    assert status == 200
    assert after["offset_seconds"] - before["offset_seconds"] == 90
    assert emulator.emulator.clock.offset == after["offset_seconds"]
    assert emulator.admin("POST", "/clock/advance", {"to": "2000-01-01T00:00:00"})[0] == 400
