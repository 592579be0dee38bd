"""Cloud Tasks rules without a server: backoff, give-up rule, status codes, names, tokens.

Why: these rules decide every retry the emulator makes and every code a test reads; the
API reference gives worked examples for some of them, and the examples are checked here
exactly, apart from any timing.
"""

from __future__ import annotations

import grpc
import pytest
from google.cloud.tasks_v2 import types as tasks_types

from gcpcall.emulator.tasks_model import (
    RetryPolicy,
    TasksError,
    backoff_seconds,
    burst_size,
    decode_page_token,
    encode_page_token,
    http_status_to_code,
    parse_queue_name,
    parse_task_name,
    queue_filter_state,
    retry_policy,
)


def policy(**overrides: float) -> RetryPolicy:
    values: dict[str, float] = {
        "max_attempts": 100,
        "max_retry_duration": 0.0,
        "min_backoff": 10.0,
        "max_backoff": 300.0,
        "max_doublings": 3,
    }
    values.update(overrides)
    return RetryPolicy(
        max_attempts=int(values["max_attempts"]),
        max_retry_duration=values["max_retry_duration"],
        min_backoff=values["min_backoff"],
        max_backoff=values["max_backoff"],
        max_doublings=int(values["max_doublings"]),
    )


def test_backoff_matches_the_reference_example() -> None:
    # RetryConfig.max_doublings: min_backoff 10s, max_backoff 300s, max_doublings 3 ->
    # "the requests will retry at 10s, 20s, 40s, 80s, 160s, 240s, 300s, 300s, ...."
    intervals = [backoff_seconds(policy(), n) for n in range(1, 9)]
    assert intervals == [10, 20, 40, 80, 160, 240, 300, 300]


def test_backoff_without_doublings_grows_linearly() -> None:
    intervals = [backoff_seconds(policy(max_doublings=0, max_backoff=1e9), n) for n in (1, 2, 3)]
    assert intervals == [10, 20, 30]


@pytest.mark.parametrize(
    ("overrides", "attempts", "elapsed", "exhausted"),
    [
        ({"max_attempts": 3}, 2, 0.0, False),
        ({"max_attempts": 3}, 3, 0.0, True),
        ({"max_attempts": 3, "max_retry_duration": 60.0}, 3, 59.0, False),
        ({"max_attempts": 3, "max_retry_duration": 60.0}, 3, 60.0, True),
        ({"max_attempts": 3, "max_retry_duration": 60.0}, 2, 600.0, False),
        ({"max_attempts": -1, "max_retry_duration": 60.0}, 500, 59.0, False),
        ({"max_attempts": -1, "max_retry_duration": 60.0}, 1, 61.0, True),
        ({"max_attempts": -1}, 10_000, 1e9, False),
    ],
)
def test_a_task_gives_up_when_both_limits_are_reached(
    overrides: dict[str, float], attempts: int, elapsed: float, exhausted: bool
) -> None:
    assert policy(**overrides).exhausted(attempts, elapsed) is exhausted


def test_a_task_retry_config_overrides_the_queue_field_by_field() -> None:
    queue = tasks_types.RetryConfig.pb()(max_attempts=9, max_doublings=4)
    queue.min_backoff.FromSeconds(2)
    task = tasks_types.RetryConfig.pb()(max_attempts=2)
    task.max_backoff.FromSeconds(20)

    effective = retry_policy(queue, task)

    assert effective == RetryPolicy(
        max_attempts=2, max_retry_duration=0.0, min_backoff=2.0, max_backoff=20.0, max_doublings=4
    )
    assert retry_policy(tasks_types.RetryConfig.pb()()) == RetryPolicy(
        max_attempts=100,
        max_retry_duration=0.0,
        min_backoff=0.1,
        max_backoff=3600.0,
        max_doublings=16,
    )


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (200, grpc.StatusCode.OK),
        (204, grpc.StatusCode.OK),
        (400, grpc.StatusCode.INVALID_ARGUMENT),
        (401, grpc.StatusCode.UNAUTHENTICATED),
        (403, grpc.StatusCode.PERMISSION_DENIED),
        (404, grpc.StatusCode.NOT_FOUND),
        (429, grpc.StatusCode.RESOURCE_EXHAUSTED),
        (500, grpc.StatusCode.INTERNAL),
        (503, grpc.StatusCode.UNAVAILABLE),
        (504, grpc.StatusCode.DEADLINE_EXCEEDED),
        (418, grpc.StatusCode.UNKNOWN),
    ],
)
def test_http_status_maps_to_the_google_rpc_code(status: int, code: grpc.StatusCode) -> None:
    assert http_status_to_code(status) == code


def test_burst_size_follows_the_rate() -> None:
    assert burst_size(500) == 100
    assert burst_size(5) == 5
    assert burst_size(0.5) == 1
    assert burst_size(2.5) == 3


def test_names_parse_and_refuse() -> None:
    name = parse_task_name("projects/my-proj:x.y/locations/us-central1/queues/q-1/tasks/T_1-a")
    assert name.task_id == "T_1-a"
    assert name.queue.queue_id == "q-1"
    assert str(name) == "projects/my-proj:x.y/locations/us-central1/queues/q-1/tasks/T_1-a"
    assert str(parse_queue_name("projects/p/locations/l/queues/q")) == (
        "projects/p/locations/l/queues/q"
    )
    with pytest.raises(TasksError) as refused:
        parse_queue_name("projects/p/locations/l/queues/q/extra")
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_page_tokens_belong_to_their_listing() -> None:
    token = encode_page_token("tasks:a", "a/tasks/t3")
    assert decode_page_token("tasks:a", token) == "a/tasks/t3"
    for scope, bad in (("tasks:b", token), ("tasks:a", "%%%")):
        with pytest.raises(TasksError):
            decode_page_token(scope, bad)


def test_queue_filters() -> None:
    assert queue_filter_state("") is None
    assert queue_filter_state("state: PAUSED") == tasks_types.Queue.State.PAUSED
    assert queue_filter_state("state = running") == tasks_types.Queue.State.RUNNING
    for bad in ("name: x", "state: SLEEPING"):
        with pytest.raises(TasksError):
            queue_filter_state(bad)
