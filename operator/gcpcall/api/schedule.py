"""Cron and time zone checks, the two ScheduledGcpCall fields CEL cannot judge.

Why strict: croniter accepts more than Cloud Scheduler's unix-cron (seconds fields,
`@hourly`, `L`, `#`, `?`, `H`). A schedule croniter likes but Google refuses would only
fail at the Google call, after the user has moved on; so only the five plain unix-cron
fields pass, then croniter checks the ranges.
"""

from __future__ import annotations

import re
import zoneinfo
from functools import cache, lru_cache

from croniter import croniter

__all__ = ["DEFAULT_TIME_ZONE", "cron_problem", "time_zone_problem"]

DEFAULT_TIME_ZONE = "Etc/UTC"

_MONTHS = "JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC"
_DAYS = "SUN|MON|TUE|WED|THU|FRI|SAT"
_FIELD_NAMES = ("minute", "hour", "day of month", "month", "day of week")
_PLAIN = re.compile(r"^[0-9*,/-]+$")
_FIELD_SYNTAX = (
    _PLAIN,
    _PLAIN,
    _PLAIN,
    re.compile(rf"^(?:[0-9*,/-]|{_MONTHS})+$", re.IGNORECASE),
    re.compile(rf"^(?:[0-9*,/-]|{_DAYS})+$", re.IGNORECASE),
)


@lru_cache(maxsize=4096)
def cron_problem(expression: str) -> str | None:
    """None when `expression` is a five-field unix-cron schedule, else what is wrong.

    Cached: the answer depends on the string alone, and croniter's check is half the cost
    of parsing a spec, which happens on every reconcile, every resume and every relay call
    (objects share a handful of schedules)."""
    fields = expression.split()
    if len(fields) != 5:
        return (f"{expression!r} has {len(fields)} fields; unix-cron has 5 "
                "(minute hour day-of-month month day-of-week)")
    for name, value, syntax in zip(_FIELD_NAMES, fields, _FIELD_SYNTAX, strict=True):
        if not syntax.match(value):
            return f"the {name} field {value!r} is not unix-cron syntax"
    if not croniter.is_valid(expression):
        return f"{expression!r} is not a valid unix-cron schedule (a value out of range?)"
    return None


@cache
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def time_zone_problem(name: str) -> str | None:
    """None when `name` is an IANA time zone name, else what is wrong.

    `available_timezones()` rather than `ZoneInfo(name)` alone: the latter also loads
    files such as `posixrules` or `Factory` that are not zone names.
    """
    if name in _zones() or name == DEFAULT_TIME_ZONE:
        return None
    return f"{name!r} is not an IANA time zone name (such as Europe/Berlin or Etc/UTC)"
