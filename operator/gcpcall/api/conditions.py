"""Conditions in the metav1.Condition shape, and the minimal status patch.

Why here, once: cert-manager's rule is that a condition's `lastTransitionTime` changes
only when its status flips, and that the operator writes status only when something
changed. Both are easy to get subtly wrong per call site (a new timestamp on every sync
makes every sync a write), so every status goes through these two functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from gcpcall.api.observed import format_time
from gcpcall.api.tree import plain

__all__ = [
    "MAX_MESSAGE",
    "Condition",
    "ConditionStatus",
    "find_condition",
    "set_condition",
    "status_patch",
]

MAX_MESSAGE = 4096  # conditions are read in `kubectl describe`; keep them readable


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


@dataclass(frozen=True)
class Condition:
    type: str
    status: ConditionStatus
    reason: str
    message: str = ""


def find_condition(
    conditions: Sequence[Mapping[str, Any]] | None, type_: str
) -> Mapping[str, Any] | None:
    for cond in conditions or ():
        if cond.get("type") == type_:
            return cond
    return None


def _shorten(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 3] + "..."


def set_condition(
    conditions: Sequence[Mapping[str, Any]] | None,
    condition: Condition,
    *,
    generation: int | None,
    now: datetime,
) -> list[dict[str, Any]]:
    """The whole conditions list with `condition` upserted, others untouched.

    `lastTransitionTime` is kept when the status does not flip (even if reason or message
    change); `generation` (None: leave it out) becomes `observedGeneration`.
    """
    previous = find_condition(conditions, condition.type)
    transition = format_time(now)
    if previous is not None and previous.get("status") == condition.status.value:
        transition = str(previous.get("lastTransitionTime") or transition)
    entry: dict[str, Any] = {
        "type": condition.type,
        "status": condition.status.value,
        "reason": condition.reason,
        "message": _shorten(condition.message),
        "lastTransitionTime": transition,
    }
    if generation is not None:
        entry["observedGeneration"] = generation
    result = [dict(c) for c in conditions or () if c.get("type") != condition.type]
    position = next((i for i, c in enumerate(conditions or ())
                     if c.get("type") == condition.type), len(result))
    result.insert(position, entry)
    return result


def _differ(old: Any, new: Any) -> bool:
    """Whether two JSON values differ. Equal as they are means equal as JSON, which skips
    two plain copies in the common case of an unchanged field; otherwise their plain forms
    decide (a tuple and a list with the same items are the same JSON)."""
    return bool(old != new) and plain(old) != plain(new)


def _nested_diff(have: Mapping[str, Any], want: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch (RFC 7386) turning `have` into exactly `want`."""
    diff: dict[str, Any] = {}
    for key in have.keys() - want.keys():
        diff[key] = None
    for key, value in want.items():
        old = have.get(key)
        if isinstance(value, Mapping) and isinstance(old, Mapping):
            sub = _nested_diff(old, value)
            if sub:
                diff[key] = sub
        elif (key not in have or _differ(old, value)) and (
            value is not None or key in have
        ):
            diff[key] = plain(value)
    return diff


def status_patch(
    current: Mapping[str, Any] | None, desired: Mapping[str, Any]
) -> dict[str, Any]:
    """The merge patch for `.status` that makes the keys of `desired` true; {} for none.

    Top-level keys absent from `desired` are left alone (another writer may own them); a
    `None` value removes a key. Nested objects are made exactly equal; lists (such as
    `conditions` and `runs`) are sent whole when they differ, since a merge patch replaces
    lists.
    """
    have = current or {}
    patch: dict[str, Any] = {}
    for key, value in desired.items():
        old = have.get(key)
        if value is None:
            if old is not None:
                patch[key] = None
        elif isinstance(value, Mapping) and isinstance(old, Mapping):
            sub = _nested_diff(old, value)
            if sub:
                patch[key] = sub
        elif _differ(old, value):
            patch[key] = plain(value)
    return patch
