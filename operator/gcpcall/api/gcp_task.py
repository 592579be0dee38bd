"""The GcpTask spec as a typed, validated, defaulted value.

Why: a Cloud Task cannot be updated, so a spec Google would refuse must be caught before
the one CreateTask call; and the scheduleTime rules are checked against the object's
creation time (passed as `Defaults.now`), so that the verdict does not flip to "in the
past" while the task waits in its queue.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from gcpcall.api._fields import child, opt_int, opt_map, opt_str, req_str
from gcpcall.api.common import (
    DeletionPolicy,
    Delivery,
    OperationPolicy,
    parse_deletion_policy,
    parse_delivery,
    parse_operation,
)
from gcpcall.api.errors import InvalidSpec
from gcpcall.api.observed import NoOffset, parse_time
from gcpcall.api.placement import Defaults, placement_from_spec, resolve_service_account_name
from gcpcall.api.target import Target, parse_target
from gcpcall.api.templates import check_templates

__all__ = [
    "DEFAULT_DISPATCH_DEADLINE_SECONDS",
    "MAX_SCHEDULE_AHEAD",
    "GcpTaskSpec",
    "parse_gcp_task",
    "parse_schedule_time",
]

DEFAULT_DISPATCH_DEADLINE_SECONDS = 600  # Cloud Tasks' default for HTTP tasks
MAX_SCHEDULE_AHEAD = timedelta(days=30)  # Cloud Tasks refuses schedule times further out
_QUEUE = re.compile(r"^[A-Za-z0-9-]{1,100}$")
# Cloud Tasks headers set by Google itself, refused like X-CloudScheduler* for jobs.
_TASK_RESERVED_PREFIXES = ("x-cloudtasks",)
# Cloud Tasks sends every HTTP task with "User-Agent: Google-Cloud-Tasks": a user value
# would be dropped without a word (api.md: refused, as for jobs).
_TASK_RESERVED_NAMES = frozenset({"user-agent"})


@dataclass(frozen=True)
class GcpTaskSpec:
    queue: str
    project: str
    location: str
    service_account_name: str | None
    target: Target
    schedule_time: datetime | None  # aware, UTC
    delay_seconds: int | None
    dispatch_deadline_seconds: int
    delivery: Delivery
    operation: OperationPolicy | None
    ttl_seconds_after_finished: int | None
    deletion_policy: DeletionPolicy

    @property
    def queue_name(self) -> str:
        return f"projects/{self.project}/locations/{self.location}/queues/{self.queue}"

    def schedule_at(self, created: datetime) -> datetime | None:
        """When the task should first dispatch: scheduleTime, or creation + delaySeconds."""
        if self.schedule_time is not None:
            return self.schedule_time
        if self.delay_seconds:
            return created + timedelta(seconds=self.delay_seconds)
        return None


def parse_schedule_time(value: str, field: str) -> datetime:
    """An RFC 3339 timestamp with an explicit offset (`Z` or `+hh:mm`), as UTC."""
    try:
        parsed = parse_time(value, assume_utc=False)
        if "T" not in value.upper():
            raise NoOffset(value)  # a date alone, or a space for the T: not RFC 3339 either
    except NoOffset:
        raise InvalidSpec(field, f"{value!r} needs a date, a time and an offset "
                                 "(such as 2026-11-22T12:00:00Z)") from None
    except ValueError:
        raise InvalidSpec(field, f"{value!r} is not an RFC 3339 timestamp such as "
                                 "2026-11-22T12:00:00Z") from None
    return parsed


def _parse_schedule(
    spec: Mapping[str, Any], path: str, now: datetime | None
) -> tuple[datetime | None, int | None]:
    raw_time = opt_str(spec, "scheduleTime", path)
    delay = opt_int(spec, "delaySeconds", path, low=0,
                    high=int(MAX_SCHEDULE_AHEAD.total_seconds()))
    if raw_time is not None and delay is not None:
        raise InvalidSpec(child(path, "delaySeconds"), "set scheduleTime or delaySeconds, "
                                                       "not both")
    if raw_time is None:
        return None, delay
    field = child(path, "scheduleTime")
    when = parse_schedule_time(raw_time, field)
    if now is None:
        raise ValueError("Defaults.now is required to parse a GcpTask with scheduleTime")
    if when <= now:
        raise InvalidSpec(field, f"{raw_time} is not in the future (the object was created "
                                 f"at {now.astimezone(UTC).isoformat()})")
    if when - now > MAX_SCHEDULE_AHEAD:
        raise InvalidSpec(field, f"{raw_time} is more than 30 days ahead; Cloud Tasks "
                                 "refuses that")
    return when, delay


def parse_gcp_task(spec: Mapping[str, Any], ctx: Defaults) -> GcpTaskSpec:
    """Validate `spec` and apply every default; raises `InvalidSpec` naming the field."""
    path = "spec"
    if not isinstance(spec, Mapping):
        raise InvalidSpec(path, "must be an object")
    queue = req_str(spec, "queue", path)
    if not _QUEUE.match(queue):
        raise InvalidSpec(child(path, "queue"), f"{queue!r} is not a queue id (1-100 "
                                                "letters, digits or hyphens)")
    placement = placement_from_spec(spec, ctx, path)
    delivery = parse_delivery(spec, path)
    target = parse_target(opt_map(spec, "target", path), child(path, "target"),
                          templates=delivery is Delivery.RELAY,
                          allow_http=ctx.allow_http,
                          extra_reserved_names=_TASK_RESERVED_NAMES,
                          extra_reserved_prefixes=_TASK_RESERVED_PREFIXES)
    schedule_time, delay = _parse_schedule(spec, path, ctx.now)
    deadline = opt_int(spec, "dispatchDeadlineSeconds", path, low=15, high=1800)
    check_templates(target, delivery is Delivery.RELAY, child(path, "target"),
                    allow_http=ctx.allow_http)
    return GcpTaskSpec(
        queue=queue,
        project=placement.project,
        location=placement.location,
        service_account_name=resolve_service_account_name(spec, ctx, path),
        target=target,
        schedule_time=schedule_time,
        delay_seconds=delay,
        dispatch_deadline_seconds=DEFAULT_DISPATCH_DEADLINE_SECONDS if deadline is None
        else deadline,
        delivery=delivery,
        operation=parse_operation(spec, path, delivery),
        ttl_seconds_after_finished=opt_int(spec, "ttlSecondsAfterFinished", path, low=0),
        deletion_policy=parse_deletion_policy(spec, path),
    )
