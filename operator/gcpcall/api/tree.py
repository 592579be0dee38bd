"""Copies and plain forms of JSON-shaped values (status, parts of it), fast.

Why not `copy.deepcopy`: every status write copies the object's status a few times (the
base a part is computed from, the status after it), and a status holds up to
`historyLimit` runs with their trimmed responses. `deepcopy` keeps a memo and dispatches
per value in Python: 550 µs for a ten-run status on the 2-core bench machine, against
92 µs for a pickle round trip, which copies the same plain data in C. Only the operator's
own in-memory values go through `copy_tree`, never bytes from outside, so unpickling here
is as safe as the copy it replaces; a value pickle cannot take (a kopf view, say) is made
plain instead.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from typing import Any, TypeVar

__all__ = ["copy_tree", "plain"]

T = TypeVar("T")

_ATOMS = frozenset({str, int, float, bool, type(None)})


def copy_tree(value: T) -> T:
    """A deep copy of a JSON-shaped value."""
    try:
        copied: T = pickle.loads(pickle.dumps(value, pickle.HIGHEST_PROTOCOL))  # noqa: S301
    except (pickle.PicklingError, TypeError, AttributeError):
        copied = plain(value)
    return copied


def plain(value: Any) -> Any:
    """A deep copy made of dicts and lists only, so that kopf's read-only mapping views and
    tuples compare and serialize as the JSON they stand for. Exact type checks first: the
    `Mapping` check is an ABC lookup, which for a ten-run status tripled the time."""
    kind = type(value)
    if kind is dict:
        return {k if type(k) is str else str(k): v if type(v) in _ATOMS else plain(v)
                for k, v in value.items()}
    if kind is list or kind is tuple:
        return [v if type(v) in _ATOMS else plain(v) for v in value]
    if kind in _ATOMS:
        return value
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value
