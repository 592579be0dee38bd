"""Checking and editing Cloud Scheduler Job messages: create-time defaults, update masks.

Why: CreateJob and UpdateJob share one notion of a valid job and of the defaults the API
reports back, and UpdateJob's mask semantics (output-only fields ignored, unknown paths
refused) are subtle enough to deserve their own module. Works on the raw protobuf
messages (`scheduler_v1.Job.pb()`), which is what the service stores.
"""

from __future__ import annotations

import zoneinfo
from typing import Any

from google.cloud import scheduler_v1
from google.protobuf import field_mask_pb2

from gcpcall.emulator.scheduler_rules import (
    DEFAULT_ATTEMPT_DEADLINE,
    DEFAULT_MAX_BACKOFF,
    DEFAULT_MAX_DOUBLINGS,
    DEFAULT_MIN_BACKOFF,
    InvalidArgument,
    RetryPolicy,
    time_zone,
    validate_schedule,
)

__all__ = [
    "JOB_PB",
    "OUTPUT_ONLY_FIELDS",
    "Unimplemented",
    "apply_update",
    "clone",
    "fill_defaults",
    "retry_policy",
    "validate_job",
]

JOB_PB: Any = scheduler_v1.Job.pb()
OUTPUT_ONLY_FIELDS = frozenset(
    {"name", "user_update_time", "state", "status", "schedule_time", "last_attempt_time"}
)
_UPDATABLE_SCALARS = ("description", "schedule", "time_zone")
_UPDATABLE_MESSAGES = (
    "http_target",
    "app_engine_http_target",
    "pubsub_target",
    "retry_config",
    "attempt_deadline",
)
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_HTTP_METHOD_NAMES: dict[int, str] = {
    1: "POST",
    2: "GET",
    3: "HEAD",
    4: "PUT",
    5: "DELETE",
    6: "PATCH",
    7: "OPTIONS",
}  # google.cloud.scheduler.v1.HttpMethod; 0 (unspecified) means POST
_DROPPED_HEADER_PREFIXES = ("x-google-", "x-appengine-", "x-cloudscheduler")
_COMPUTED_HEADERS = frozenset({"host", "content-length", "user-agent"})


class Unimplemented(Exception):
    """A feature of the API the emulator does not emulate (the RPC answers UNIMPLEMENTED)."""


def clone(job: Any) -> Any:
    """A deep copy of a Job message."""
    copy = JOB_PB()
    copy.CopyFrom(job)
    return copy


def http_method_name(value: int) -> str:
    """ "POST", "GET", ... for an HttpMethod number (unspecified means POST)."""
    return _HTTP_METHOD_NAMES.get(value, "POST")


def validate_job(job: Any) -> tuple[zoneinfo.ZoneInfo, RetryPolicy]:
    """Check a complete job; returns its time zone and retry policy.

    Raises InvalidArgument or Unimplemented.
    """
    if len(job.description) > 500:
        raise InvalidArgument("description must not exceed 500 characters")
    if not job.schedule:
        raise InvalidArgument("schedule is required")
    validate_schedule(job.schedule)
    zone = time_zone(job.time_zone)
    target = job.WhichOneof("target")
    if target is None:
        raise InvalidArgument("a target is required")
    if target != "http_target":
        raise Unimplemented(f"the emulator runs only http_target jobs, not {target}")
    _validate_http_target(job.http_target)
    policy = retry_policy(job)
    policy.validate()
    return zone, policy


def _validate_http_target(target: Any) -> None:
    if not target.uri.startswith(("http://", "https://")):
        raise InvalidArgument("http_target.uri must begin with http:// or https://")
    if len(target.uri) > 2083:
        raise InvalidArgument("http_target.uri must not exceed 2083 characters")
    if target.body and http_method_name(target.http_method) not in _BODY_METHODS:
        raise InvalidArgument("a body is allowed only with POST, PUT or PATCH")
    auth = target.WhichOneof("authorization_header")
    if auth is not None and not getattr(target, auth).service_account_email:
        raise InvalidArgument(f"http_target.{auth}.service_account_email is required")
    if sum(len(k) + len(v) for k, v in target.headers.items()) >= 80 * 1024:
        raise InvalidArgument("the headers must total less than 80KB")


def retry_policy(job: Any) -> RetryPolicy:
    """The effective retry settings of a job (defaults for what is unset)."""
    config = job.retry_config

    def seconds(field: str, default: float) -> float:
        if not config.HasField(field):
            return default
        return float(getattr(config, field).ToTimedelta().total_seconds())

    deadline = DEFAULT_ATTEMPT_DEADLINE
    if job.HasField("attempt_deadline") and job.attempt_deadline.ToTimedelta().total_seconds():
        deadline = job.attempt_deadline.ToTimedelta().total_seconds()
    return RetryPolicy(
        retry_count=config.retry_count,
        max_retry_duration=seconds("max_retry_duration", 0.0),
        min_backoff=seconds("min_backoff_duration", DEFAULT_MIN_BACKOFF),
        max_backoff=seconds("max_backoff_duration", DEFAULT_MAX_BACKOFF),
        max_doublings=config.max_doublings or DEFAULT_MAX_DOUBLINGS,
        attempt_deadline=deadline,
    )


def fill_defaults(job: Any) -> None:
    """Write the defaults the API reports back into a valid job, in place."""
    policy = retry_policy(job)
    config = job.retry_config
    config.retry_count = policy.retry_count
    config.max_retry_duration.FromNanoseconds(round(policy.max_retry_duration * 1e9))
    config.min_backoff_duration.FromNanoseconds(round(policy.min_backoff * 1e9))
    config.max_backoff_duration.FromNanoseconds(round(policy.max_backoff * 1e9))
    config.max_doublings = policy.max_doublings
    job.attempt_deadline.FromNanoseconds(round(policy.attempt_deadline * 1e9))
    if job.WhichOneof("target") == "http_target":
        headers = job.http_target.headers
        for key in list(headers):
            lowered = key.lower()
            if lowered in _COMPUTED_HEADERS or lowered.startswith(_DROPPED_HEADER_PREFIXES):
                del headers[key]
        headers["User-Agent"] = "Google-Cloud-Scheduler"


def apply_update(stored: Any, update: Any, mask_paths: list[str]) -> Any:
    """The job after UpdateJob: `stored` with `update`'s fields named by the mask.

    Output-only fields in the mask are ignored; an empty mask means every updatable field
    the request populates (AIP-134). Raises InvalidArgument for an unknown path.
    """
    paths = [p for p in mask_paths if p.split(".", 1)[0] not in OUTPUT_ONLY_FIELDS]
    if not mask_paths:
        paths = _populated_fields(update)
    mask = field_mask_pb2.FieldMask(paths=paths)
    if paths and not mask.IsValidForDescriptor(JOB_PB.DESCRIPTOR):
        raise InvalidArgument(f"invalid update_mask paths {mask_paths}")
    result = clone(stored)
    mask.MergeMessage(update, result, replace_message_field=True, replace_repeated_field=True)
    return result


def _populated_fields(update: Any) -> list[str]:
    paths = [field for field in _UPDATABLE_SCALARS if getattr(update, field)]
    paths += [field for field in _UPDATABLE_MESSAGES if update.HasField(field)]
    return paths
