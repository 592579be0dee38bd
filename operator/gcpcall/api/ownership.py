"""Who writes which status field: one owner per field and per condition type.

Why written down as data: status is written from four places (the spec reconciler, the
batched job sync, the task poller, the relay), each from its own observation. If two of
them write one field, the later write wins whatever it knew, and a run or a condition can
disappear. Each owner here writes only its own fields, the status writer refuses a write
of anyone else's (`check`), and a status patch that carries a whole list (`conditions`,
`runs`) is made against the exact version it was computed from, so no writer can drop or
roll back another's field (see `reconcile.status_writer`).

The table, by kind and delivery (Direct / Relay):

ScheduledGcpCall
  reconciler  observedGeneration, jobName, identity, lastRunRequest; condition Ready
              (the one job converge, run from a spec change or from the sync's drift check)
  sync        state, nextRunTime; Direct also runs, lastRun; condition LastRunSucceeded
  relay       Relay only: runs, lastRun; condition LastRunSucceeded
GcpTask
  reconciler  observedGeneration, taskName, identity; condition Ready
  poller      scheduleTime, dispatchCount, responseCount, firstAttemptTime (what Cloud Tasks
              reports); Direct also phase, lastAttempt, completionTime; condition Succeeded
  relay       Relay only: phase, lastAttempt, completionTime, operation; condition Succeeded

A write may carry several owners' contributions at once (the create of a GcpTask reports
Ready and the queued phase in one patch); each part is still computed by its owner's code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from gcpcall.api.conditions import Condition, set_condition
from gcpcall.api.tree import copy_tree

__all__ = ["Contribute", "Owned", "Owner", "OwnershipError", "Part", "apply_parts", "check",
           "owned"]


class Owner(StrEnum):
    RECONCILER = "reconciler"
    SYNC = "sync"
    POLLER = "poller"
    RELAY = "relay"


@dataclass(frozen=True)
class Part:
    """What one owner wants of the status: top-level fields (None removes one) and the
    conditions it owns. The status writer merges parts over the newest status."""

    owner: Owner
    fields: Mapping[str, Any] = field(default_factory=dict)
    conditions: Sequence[Condition] = ()


@dataclass(frozen=True)
class Owned:
    fields: frozenset[str]
    conditions: frozenset[str]


class OwnershipError(ValueError):
    """A writer tried to write a field it does not own: a bug, never user input."""


_NONE = Owned(frozenset(), frozenset())

_CALL_RUNS = frozenset({"runs", "lastRun"})
_TASK_OUTCOME = frozenset({"phase", "lastAttempt", "completionTime"})

_TABLE: dict[tuple[str, Owner, bool], Owned] = {}
for _relay in (False, True):
    _TABLE["ScheduledGcpCall", Owner.RECONCILER, _relay] = Owned(
        frozenset({"observedGeneration", "jobName", "identity", "lastRunRequest"}),
        frozenset({"Ready"}))
    _TABLE["GcpTask", Owner.RECONCILER, _relay] = Owned(
        frozenset({"observedGeneration", "taskName", "identity"}), frozenset({"Ready"}))
_TABLE["ScheduledGcpCall", Owner.SYNC, False] = Owned(
    frozenset({"state", "nextRunTime"}) | _CALL_RUNS, frozenset({"LastRunSucceeded"}))
_TABLE["ScheduledGcpCall", Owner.SYNC, True] = Owned(
    frozenset({"state", "nextRunTime"}), frozenset())
_TABLE["ScheduledGcpCall", Owner.RELAY, True] = Owned(_CALL_RUNS,
                                                      frozenset({"LastRunSucceeded"}))
_TASK_READ = frozenset({"scheduleTime", "dispatchCount", "responseCount", "firstAttemptTime"})
_TABLE["GcpTask", Owner.POLLER, False] = Owned(_TASK_READ | _TASK_OUTCOME,
                                               frozenset({"Succeeded"}))
_TABLE["GcpTask", Owner.POLLER, True] = Owned(_TASK_READ, frozenset())
_TABLE["GcpTask", Owner.RELAY, True] = Owned(_TASK_OUTCOME | {"operation"},
                                             frozenset({"Succeeded"}))


def owned(kind: str, owner: Owner, relay: bool) -> Owned:
    """What `owner` writes on an object of `kind` with Relay (or Direct) delivery."""
    return _TABLE.get((kind, owner, relay), _NONE)


def check(kind: str, owner: Owner, relay: bool, fields: set[str] | frozenset[str],
          conditions: set[str] | frozenset[str]) -> None:
    """Raise OwnershipError when `owner` would write a field or condition not its own."""
    mine = owned(kind, owner, relay)
    stray = sorted((set(fields) - mine.fields) | (set(conditions) - mine.conditions))
    if stray:
        mode = "Relay" if relay else "Direct"
        raise OwnershipError(f"the {owner} does not own {', '.join(stray)} of a {mode} {kind}")


# A part may be computed from the status it is merged into (so it can be recomputed over a
# newer status after a write conflict).
Contribute = Callable[[Mapping[str, Any]], Part]


def apply_parts(
    kind: str, relay: bool, status: Mapping[str, Any], parts: Sequence[Part | Contribute],
    now: datetime,
) -> tuple[dict[str, Any], set[str]]:
    """The status with `parts` applied in order (each sees the ones before), and the
    top-level keys they touched. Raises OwnershipError for a part that strays."""
    after = copy_tree(dict(status))
    touched: set[str] = set()
    for contribute in parts:
        part = contribute if isinstance(contribute, Part) else contribute(copy_tree(after))
        check(kind, part.owner, relay, set(part.fields), {c.type for c in part.conditions})
        for key, value in part.fields.items():
            touched.add(key)
            if value is None:
                after.pop(key, None)
            else:
                after[key] = copy_tree(value)
        if part.conditions:
            touched.add("conditions")
            conditions = [dict(c) for c in after.get("conditions") or ()]
            generation = after.get("observedGeneration")
            for condition in part.conditions:
                conditions = set_condition(conditions, condition, generation=generation, now=now)
            after["conditions"] = conditions
    return after, touched
