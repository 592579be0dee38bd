"""`api.settled`: which objects a restarted operator resumes and which it handles as new."""

from __future__ import annotations

from typing import Any

import pytest

from gcpcall.api.settled import RUN_REQUEST_ANNOTATION, settled


def obj(kind: str, reason: str | None, *, generation: int = 2, observed: int | None = 2,
        annotations: dict[str, str] | None = None, **status: Any) -> dict[str, Any]:
    conditions = [{"type": "Ready", "reason": reason}] if reason else []
    if observed is not None:
        status["observedGeneration"] = observed
    return {"kind": kind,
            "metadata": {"generation": generation, "annotations": annotations or {}},
            "status": {"conditions": conditions, **status}}


@pytest.mark.parametrize("reason", ["UpToDate", "Paused", "InvalidSpec", "AdoptionRefused"])
def test_a_call_with_a_final_reason_at_its_generation_is_settled(reason: str) -> None:
    assert settled(obj("ScheduledGcpCall", reason))


@pytest.mark.parametrize("reason", ["GcpError", "PermissionDenied", "IdentityNotReady",
                                    "DeletionBlocked", "Creating", None])
def test_a_call_that_waits_for_a_retry_is_not(reason: str | None) -> None:
    assert not settled(obj("ScheduledGcpCall", reason))


def test_a_newer_generation_or_no_status_is_not_settled() -> None:
    assert not settled(obj("ScheduledGcpCall", "UpToDate", generation=3))
    assert not settled(obj("ScheduledGcpCall", "UpToDate", observed=None))
    assert not settled({"kind": "GcpTask", "metadata": {"generation": 1}})


def test_a_run_request_not_yet_echoed_in_status_is_not_settled() -> None:
    asked = {RUN_REQUEST_ANNOTATION: "2026-11-22T10:00:00Z"}
    assert not settled(obj("ScheduledGcpCall", "UpToDate", annotations=asked))
    assert not settled(obj("ScheduledGcpCall", "UpToDate", annotations=asked,
                           lastRunRequest="2026-11-21T10:00:00Z"))
    assert settled(obj("ScheduledGcpCall", "UpToDate", annotations=asked,
                       lastRunRequest="2026-11-22T10:00:00Z"))


@pytest.mark.parametrize("reason", ["Created", "InvalidSpec", "QueueNotFound"])
def test_a_created_invalid_or_queue_waiting_task_is_settled(reason: str) -> None:
    assert settled(obj("GcpTask", reason, phase="Queued"))


@pytest.mark.parametrize("phase", ["Succeeded", "Failed", "Unknown"])
def test_a_finished_task_is_settled_whatever_its_reason(phase: str) -> None:
    assert settled(obj("GcpTask", "GcpError", phase=phase))


@pytest.mark.parametrize("reason", ["GcpError", "IdentityNotReady", "PermissionDenied"])
def test_a_task_whose_create_waits_for_a_retry_is_not(reason: str) -> None:
    assert not settled(obj("GcpTask", reason, phase="Pending"))
