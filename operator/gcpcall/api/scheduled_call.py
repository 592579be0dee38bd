"""The ScheduledGcpCall spec as a typed, validated, defaulted value.

Why: the reconciler, the mapper to a Cloud Scheduler job and the relay all read the spec;
parsing it once into a frozen object means defaults are applied in one place (never in the
CRD schema, where Argo CD would show them as a permanent diff) and every rule the schema
cannot express is enforced before any Google call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gcpcall.api._fields import child, opt_bool, opt_int, opt_map, opt_str, req_str
from gcpcall.api.common import (
    DeletionPolicy,
    Delivery,
    OperationPolicy,
    parse_deletion_policy,
    parse_delivery,
    parse_operation,
)
from gcpcall.api.errors import InvalidSpec
from gcpcall.api.placement import (
    Defaults,
    placement_from_spec,
    resolve_service_account_name,
)
from gcpcall.api.schedule import DEFAULT_TIME_ZONE, cron_problem, time_zone_problem
from gcpcall.api.target import Target, parse_target
from gcpcall.api.templates import check_templates

__all__ = [
    "DEFAULT_ATTEMPT_DEADLINE_SECONDS",
    "DEFAULT_HISTORY_LIMIT",
    "RetryPolicy",
    "ScheduledCallSpec",
    "parse_scheduled_call",
]

DEFAULT_ATTEMPT_DEADLINE_SECONDS = 180  # Cloud Scheduler's default for HTTP targets
DEFAULT_HISTORY_LIMIT = 10
_INT32 = 2**31 - 1
# Cloud Scheduler replaces User-Agent with "Google-Cloud-Scheduler" on every job; a user
# value would never be stored, and would show as drift on every sync.
_JOB_SET_HEADERS = frozenset({"user-agent"})
_MAX_DURATION_SECONDS = 315_576_000_000  # google.protobuf.Duration's range


@dataclass(frozen=True)
class RetryPolicy:
    """Cloud Scheduler's retry config with its own defaults filled in.

    Filled in, not left unset: Google returns the defaults on read, so an unset field
    would show as a difference on every sync.
    """

    retry_count: int = 0
    max_retry_duration_seconds: int = 0  # 0: no time limit
    min_backoff_seconds: int = 5
    max_backoff_seconds: int = 3600
    max_doublings: int = 5


@dataclass(frozen=True)
class ScheduledCallSpec:
    schedule: str
    time_zone: str
    paused: bool
    description: str
    project: str
    location: str
    service_account_name: str | None
    target: Target
    retry: RetryPolicy
    attempt_deadline_seconds: int
    delivery: Delivery
    operation: OperationPolicy | None
    history_limit: int
    deletion_policy: DeletionPolicy


def _parse_retry(spec: Mapping[str, Any], path: str) -> RetryPolicy:
    raw = opt_map(spec, "retry", path)
    if raw is None:
        return RetryPolicy()
    rpath = child(path, "retry")
    base = RetryPolicy()

    def get(key: str, default: int, high: int) -> int:
        value = opt_int(raw, key, rpath, low=0, high=high)
        return default if value is None else value

    policy = RetryPolicy(
        retry_count=get("retryCount", base.retry_count, 5),
        max_retry_duration_seconds=get("maxRetryDurationSeconds",
                                       base.max_retry_duration_seconds, _MAX_DURATION_SECONDS),
        min_backoff_seconds=get("minBackoffSeconds", base.min_backoff_seconds,
                                _MAX_DURATION_SECONDS),
        max_backoff_seconds=get("maxBackoffSeconds", base.max_backoff_seconds,
                                _MAX_DURATION_SECONDS),
        max_doublings=get("maxDoublings", base.max_doublings, _INT32),
    )
    if policy.max_doublings == 0:
        # proto3 cannot tell 0 from unset: Google stores its default (5) instead, and the
        # job would differ from the spec forever.
        raise InvalidSpec(child(rpath, "maxDoublings"),
                          "0 is not possible: Cloud Scheduler reads 0 as unset and uses 5; "
                          "set 1 or more, or leave it unset")
    if policy.min_backoff_seconds > policy.max_backoff_seconds:
        # Named on the field the user set: with one of the two left at its default, that
        # is the one to change.
        key = "minBackoffSeconds" if "minBackoffSeconds" in raw else "maxBackoffSeconds"
        raise InvalidSpec(child(rpath, key),
                          f"minBackoffSeconds ({policy.min_backoff_seconds}) must not exceed "
                          f"maxBackoffSeconds ({policy.max_backoff_seconds})")
    return policy


def parse_scheduled_call(spec: Mapping[str, Any], ctx: Defaults) -> ScheduledCallSpec:
    """Validate `spec` and apply every default; raises `InvalidSpec` naming the field."""
    path = "spec"
    if not isinstance(spec, Mapping):
        raise InvalidSpec(path, "must be an object")
    schedule = req_str(spec, "schedule", path).strip()
    problem = cron_problem(schedule)
    if problem:
        raise InvalidSpec(child(path, "schedule"), problem)
    time_zone = opt_str(spec, "timeZone", path) or DEFAULT_TIME_ZONE
    problem = time_zone_problem(time_zone)
    if problem:
        raise InvalidSpec(child(path, "timeZone"), problem)
    description = opt_str(spec, "description", path) or ""
    if len(description) > 500:
        raise InvalidSpec(child(path, "description"), "must be at most 500 characters")
    placement = placement_from_spec(spec, ctx, path)
    delivery = parse_delivery(spec, path)
    target = parse_target(opt_map(spec, "target", path), child(path, "target"),
                          templates=delivery is Delivery.RELAY,
                          allow_http=ctx.allow_http, extra_reserved_names=_JOB_SET_HEADERS)
    check_templates(target, delivery is Delivery.RELAY, child(path, "target"),
                    allow_http=ctx.allow_http)
    deadline = opt_int(spec, "attemptDeadlineSeconds", path, low=15, high=1800)
    history = opt_int(spec, "historyLimit", path, low=0, high=50)
    return ScheduledCallSpec(
        schedule=schedule,
        time_zone=time_zone,
        paused=bool(opt_bool(spec, "paused", path)),
        description=description,
        project=placement.project,
        location=placement.location,
        service_account_name=resolve_service_account_name(spec, ctx, path),
        target=target,
        retry=_parse_retry(spec, path),
        attempt_deadline_seconds=DEFAULT_ATTEMPT_DEADLINE_SECONDS if deadline is None
        else deadline,
        delivery=delivery,
        operation=parse_operation(spec, path, delivery),
        history_limit=DEFAULT_HISTORY_LIMIT if history is None else history,
        deletion_policy=parse_deletion_policy(spec, path),
    )
