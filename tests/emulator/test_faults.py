"""Fault injection as a client sees it: error rates by code, determinism, latency.

Why: the operator's reliability suite runs against injected UNAVAILABLE/INTERNAL errors
and latency; those tests mean something only if the emulator fails the configured share
of calls, the same calls again under the same seed, and only the methods it was told to.
The client's own retry is turned off (retry=None) where the raw failures are counted.
"""

from __future__ import annotations

import pytest
from google.api_core import exceptions, retry
from google.cloud import scheduler_v1

from tests.emulator.conftest import PARENT, RunningEmulator, SchedulerApi

JOB = f"{PARENT}/jobs/faulty"


async def create_job(scheduler: SchedulerApi) -> None:
    await scheduler.create_job(
        parent=PARENT,
        job=scheduler_v1.Job(
            name=JOB,
            schedule="0 0 1 1 *",
            http_target=scheduler_v1.HttpTarget(uri="https://example.com/"),
        ),
    )


async def failure_pattern(scheduler: SchedulerApi, calls: int) -> list[bool]:
    """For each GetJob call, whether it failed with UNAVAILABLE."""
    pattern = []
    for _ in range(calls):
        try:
            await scheduler.get_job(name=JOB, retry=None)
        except exceptions.ServiceUnavailable:
            pattern.append(True)
        else:
            pattern.append(False)
    return pattern


async def test_half_of_the_calls_fail_at_a_50_percent_rate(
    scheduler: SchedulerApi, emulator: RunningEmulator
) -> None:
    await create_job(scheduler)
    status, _ = await emulator.admin_async(
        "POST", "/faults", {"method": "GetJob", "code": "UNAVAILABLE", "rate": 0.5, "seed": 1234}
    )
    assert status == 200
    await emulator.admin_async("DELETE", "/calls")

    pattern = await failure_pattern(scheduler, 200)

    assert 0.4 <= sum(pattern) / len(pattern) <= 0.6
    _, log = await emulator.admin_async("GET", "/calls?method=GetJob")
    assert log["count"] == 200
    assert sum(call["code"] == "UNAVAILABLE" for call in log["calls"]) == sum(pattern)


async def test_the_same_seed_fails_the_same_calls(
    scheduler: SchedulerApi, emulator: RunningEmulator
) -> None:
    await create_job(scheduler)
    rule = {"method": "GetJob", "code": "UNAVAILABLE", "rate": 0.5}
    await emulator.admin_async("POST", "/faults", {**rule, "seed": 7})
    first = await failure_pattern(scheduler, 60)
    await emulator.admin_async("POST", "/faults/seed", {"seed": 7})
    again = await failure_pattern(scheduler, 60)
    await emulator.admin_async("POST", "/faults/seed", {"seed": 8})
    other = await failure_pattern(scheduler, 60)

    assert first == again
    assert first != other  # equal by chance with probability 2**-60


async def test_faults_apply_only_to_their_method_and_star_to_the_rest(
    scheduler: SchedulerApi, emulator: RunningEmulator
) -> None:
    await create_job(scheduler)
    await emulator.admin_async("POST", "/faults", {"method": "GetJob", "code": "NOT_FOUND"})
    await emulator.admin_async("POST", "/faults", {"method": "*", "code": "INTERNAL"})

    with pytest.raises(exceptions.NotFound):
        await scheduler.get_job(name=JOB, retry=None)
    with pytest.raises(exceptions.InternalServerError):
        await scheduler.pause_job(name=JOB, retry=None)
    status, rules = await emulator.admin_async("DELETE", "/faults")
    assert (status, rules) == (200, {"rules": []})
    assert (await scheduler.pause_job(name=JOB)).state == scheduler_v1.Job.State.PAUSED


async def test_a_failed_create_creates_nothing(
    scheduler: SchedulerApi, emulator: RunningEmulator
) -> None:
    await emulator.admin_async(
        "POST", "/faults", {"method": "CreateJob", "code": "INTERNAL", "rate": 1.0}
    )
    with pytest.raises(exceptions.InternalServerError):
        await create_job(scheduler)
    await emulator.admin_async("DELETE", "/faults")
    with pytest.raises(exceptions.NotFound):
        await scheduler.get_job(name=JOB)


def test_client_retry_policy_absorbs_injected_unavailable(
    scheduler_client: scheduler_v1.CloudSchedulerClient, emulator: RunningEmulator
) -> None:
    scheduler_client.create_job(
        parent=PARENT,
        job=scheduler_v1.Job(
            name=JOB, schedule="0 0 1 1 *", http_target={"uri": "https://example.com/"}
        ),
    )
    emulator.admin("POST", "/faults", {"method": "GetJob", "code": "UNAVAILABLE", "rate": 0.5})
    emulator.admin("DELETE", "/calls")
    fast_retry = retry.Retry(
        predicate=retry.if_exception_type(exceptions.ServiceUnavailable),
        initial=0.001,
        maximum=0.005,
        timeout=30,
    )

    for _ in range(20):
        assert scheduler_client.get_job(name=JOB, retry=fast_retry).name == JOB

    _, log = emulator.admin("GET", "/calls?method=GetJob")
    failed = sum(call["code"] == "UNAVAILABLE" for call in log["calls"])
    assert log["count"] == 20 + failed
    assert failed > 0


def test_injected_latency_exceeds_a_client_deadline(
    scheduler_client: scheduler_v1.CloudSchedulerClient, emulator: RunningEmulator
) -> None:
    status, rules = emulator.admin(
        "POST", "/faults", {"method": "ListJobs", "rate": 0.0, "latency_seconds": 30}
    )
    assert status == 200
    assert rules["rules"][0]["latency_seconds"] == 30

    with pytest.raises(exceptions.DeadlineExceeded):
        scheduler_client.list_jobs(parent=PARENT, retry=None, timeout=0.3)
    # other methods are not slowed down: a deadline of the same size is met
    with pytest.raises(exceptions.NotFound):
        scheduler_client.get_job(name=JOB, retry=None, timeout=5)


def test_admin_refuses_bad_fault_rules(emulator: RunningEmulator) -> None:
    assert emulator.admin("POST", "/faults", {"method": "GetJob", "code": "NOPE"})[0] == 400
    assert emulator.admin("POST", "/faults", {"method": "GetJob", "rate": 1.5})[0] == 400
    assert emulator.admin("GET", "/faults") == (200, {"rules": []})
    rules = emulator.admin("POST", "/faults", {"method": "GetJob", "code": "14"})[1]
    assert rules["rules"][0]["code"] == "UNAVAILABLE"
