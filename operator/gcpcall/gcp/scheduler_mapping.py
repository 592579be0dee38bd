"""Pure mapping between a ScheduledCallSpec and a Cloud Scheduler `Job`, both ways.

Why pure (as Config Connector's direct controllers do): the reconciler and the drift check
both need "what should the job be" and "which fields differ"; as functions of plain values
they are round-trip tested without a server, and the adapter stays a thin RPC layer.

The update mask names leaf fields (`http_target.uri`, `retry_config.retry_count`, ...):
that is what gcloud itself sends to UpdateJob (`scheduler jobs update http` builds
`httpTarget.uri`, `httpTarget.headers`, `retryConfig.minBackoffDuration`, ... in REST
form), so the real API is known to accept such paths, and a whole `http_target` path would
rewrite fields that did not change. Two exceptions, both AIP-161 paths to a message field:
- maps (`http_target.headers`) can only be replaced whole;
- a token is named as a whole (`http_target.oauth_token` / `http_target.oidc_token`): its
  email and scope/audience only mean something together, and clearing a token by its leaf
  paths (gcloud's `--clear-auth-token`) is a no-op under protobuf's reference FieldMask
  merge when the request has no token message, whereas a message path with the message
  absent clears it. `oauth_token`/`oidc_token` are a oneof, so switching names only the
  new one: setting it clears the other, and naming the old one too could clear the new.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

from google.cloud import scheduler_v1

from gcpcall.api.common import RelayTarget
from gcpcall.api.observed import ObservedJob
from gcpcall.api.request import ResolvedRequest, resolve_request
from gcpcall.api.scheduled_call import ScheduledCallSpec

__all__ = [
    "actual_headers",
    "desired_job",
    "http_fields",
    "observed_job",
    "plain_time",
    "update_mask",
    "with_body",
]

# Headers Cloud Scheduler adds or manages itself; they are not drift.
_GOOGLE_HEADER_PREFIXES = ("x-google-", "x-appengine-", "x-cloudscheduler")
_GOOGLE_HEADERS = frozenset({"content-length", "host"})
_GOOGLE_DEFAULTS = {"user-agent": "google-cloud-scheduler",
                    "content-type": "application/octet-stream"}

_RETRY_PATHS = (
    ("retry_count", "retry_config.retry_count"),
    ("max_retry_duration", "retry_config.max_retry_duration"),
    ("min_backoff_duration", "retry_config.min_backoff_duration"),
    ("max_backoff_duration", "retry_config.max_backoff_duration"),
    ("max_doublings", "retry_config.max_doublings"),
)


def http_fields(req: ResolvedRequest, api: ModuleType) -> dict[str, Any]:
    """The fields of Cloud Scheduler's `HttpTarget` and Cloud Tasks' `HttpRequest` but the
    URL (`uri` in one, `url` in the other): the same messages in both APIs, so one builder
    for both, given the API's types module (`scheduler_v1` or `tasks_v2`)."""
    fields: dict[str, Any] = {
        "http_method": api.HttpMethod.__members__[req.method.value],
        "headers": req.headers,
        "body": req.body or b"",
    }
    if req.auth_kind == "oauth":
        fields["oauth_token"] = api.OAuthToken(
            service_account_email=req.service_account_email, scope=req.scope)
    elif req.auth_kind == "oidc":
        fields["oidc_token"] = api.OidcToken(
            service_account_email=req.service_account_email, audience=req.audience)
    return fields


def desired_job(
    spec: ScheduledCallSpec,
    job_name: str,
    description: str,
    identity_email: str | None,
    *,
    body: bytes | None = None,
    relay: RelayTarget | None = None,
) -> scheduler_v1.Job:
    """The job as it should be. `description` comes from `naming.job_description`; `body`
    is the resolved ConfigMap/Secret body; `relay` routes the call through the relay.
    The state (paused or not) is not part of it: PauseJob/ResumeJob handle that."""
    req = resolve_request(spec.target, identity_email, body=body, relay=relay)
    http = scheduler_v1.HttpTarget(uri=req.uri, **http_fields(req, scheduler_v1))
    retry = spec.retry
    return scheduler_v1.Job(
        name=job_name,
        description=description,
        schedule=spec.schedule,
        time_zone=spec.time_zone,
        http_target=http,
        retry_config=scheduler_v1.RetryConfig(
            retry_count=retry.retry_count,
            max_retry_duration=timedelta(seconds=retry.max_retry_duration_seconds),
            min_backoff_duration=timedelta(seconds=retry.min_backoff_seconds),
            max_backoff_duration=timedelta(seconds=retry.max_backoff_seconds),
            max_doublings=retry.max_doublings,
        ),
        attempt_deadline=timedelta(seconds=spec.attempt_deadline_seconds),
    )


def actual_headers(actual: dict[str, str], desired: dict[str, str]) -> dict[str, str]:
    """`actual` without what Google adds on its own, names lower-cased, for comparing."""
    wanted = {k.lower() for k in desired}
    out: dict[str, str] = {}
    for name, value in actual.items():
        low = name.lower()
        if low in _GOOGLE_HEADERS or low.startswith(_GOOGLE_HEADER_PREFIXES):
            continue
        if low not in wanted and _GOOGLE_DEFAULTS.get(low) == value.strip().lower():
            continue
        out[low] = value
    return out


def _seconds(value: Any) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else 0.0


def _has(message: Any, field: str) -> bool:
    return bool(field in message)


def _token_paths(desired: scheduler_v1.HttpTarget, actual: scheduler_v1.HttpTarget) -> list[str]:
    fields = {"oauth_token": ("service_account_email", "scope"),
              "oidc_token": ("service_account_email", "audience")}
    # A token without a service account is no token: Google cannot mint one, and a
    # server that clears by emptying fields may leave such a message behind.
    want = next((f for f in fields if _has(desired, f)), None)
    have = next((f for f in fields
                 if _has(actual, f) and getattr(actual, f).service_account_email), None)
    if want is None:
        return [f"http_target.{have}"] if have else []
    want_msg, have_msg = getattr(desired, want), getattr(actual, want)
    if have != want or any(getattr(want_msg, leaf) != getattr(have_msg, leaf)
                           for leaf in fields[want]):
        return [f"http_target.{want}"]
    return []


def update_mask(desired: scheduler_v1.Job, actual: scheduler_v1.Job) -> list[str]:
    """The field paths whose desired value differs from the job Google has; [] for none.

    Output-only fields (state, status, schedule_time, last_attempt_time, user_update_time)
    are never compared: they are not ours to set.
    """
    mask: list[str] = []
    # The raw protobuf messages compare in C; the field-by-field rules below (proto-plus,
    # slow) run only for a part that differs there. A restart compares every job.
    raw_desired, raw_actual = scheduler_v1.Job.pb(desired), scheduler_v1.Job.pb(actual)
    for field in ("description", "schedule", "time_zone"):
        if getattr(raw_desired, field) != getattr(raw_actual, field):
            mask.append(field)
    if raw_desired.http_target != raw_actual.http_target:
        mask.extend(_http_target_mask(desired, actual))
    if raw_desired.retry_config != raw_actual.retry_config:
        mask.extend(_retry_mask(desired, actual))
    if (raw_desired.attempt_deadline != raw_actual.attempt_deadline
            and _seconds(desired.attempt_deadline) != _seconds(actual.attempt_deadline)):
        mask.append("attempt_deadline")
    return mask


def _http_target_mask(desired: scheduler_v1.Job, actual: scheduler_v1.Job) -> list[str]:
    mask: list[str] = []
    dh, ah = desired.http_target, actual.http_target
    if dh.uri != ah.uri:
        mask.append("http_target.uri")
    if dh.http_method != ah.http_method:
        mask.append("http_target.http_method")
    want_headers = dict(dh.headers)
    if {k.lower(): v for k, v in want_headers.items()} != actual_headers(dict(ah.headers),
                                                                         want_headers):
        mask.append("http_target.headers")
    if dh.body != ah.body:
        mask.append("http_target.body")
    mask.extend(_token_paths(dh, ah))
    return mask


def _retry_mask(desired: scheduler_v1.Job, actual: scheduler_v1.Job) -> list[str]:
    mask: list[str] = []
    dr, ar = desired.retry_config, actual.retry_config
    for attr, path in _RETRY_PATHS:
        want, have = getattr(dr, attr), getattr(ar, attr)
        if isinstance(want, timedelta) or isinstance(have, timedelta):
            if _seconds(want) != _seconds(have):
                mask.append(path)
        elif want != have:
            mask.append(path)
    return mask


def plain_time(value: Any) -> datetime | None:
    """A proto Timestamp as proto-plus returns it (or None) -> an aware, plain datetime."""
    if not isinstance(value, datetime):
        return None
    return datetime.fromtimestamp(value.timestamp(), tz=UTC)


def observed_job(job: scheduler_v1.Job) -> ObservedJob:
    """The plain values api/status.py builds status from."""
    has_status = "status" in job
    return ObservedJob(
        name=job.name,
        state=scheduler_v1.Job.State(job.state).name,
        description=job.description,
        next_run_time=plain_time(job.schedule_time),
        last_attempt_time=plain_time(job.last_attempt_time),
        status_code=int(job.status.code) if has_status else None,
        status_message=str(job.status.message) if has_status else "",
        user_update_time=plain_time(job.user_update_time),
    )


def with_body(job: scheduler_v1.Job, body: bytes) -> scheduler_v1.Job:
    """A copy of `job` whose HTTP target sends `body` (a ConfigMap/Secret body read again)."""
    copy: scheduler_v1.Job = scheduler_v1.Job.deserialize(scheduler_v1.Job.serialize(job))
    copy.http_target.body = body
    return copy
