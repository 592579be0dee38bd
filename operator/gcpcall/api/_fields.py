"""Typed reads of raw spec dictionaries, each failure an `InvalidSpec` naming the field.

Why: the CRD schema checks types at admission, but the operator also meets objects that
predate a schema change, or a schema applied without validation; reading a `str` where a
`dict` arrived must say which field, not raise a `TypeError` from deep inside a parser.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gcpcall.api.errors import InvalidSpec

__all__ = [
    "child",
    "opt_bool",
    "opt_int",
    "opt_list",
    "opt_map",
    "opt_str",
    "req_str",
]


def child(path: str, key: str | int) -> str:
    """JSON path of a child: `spec` + `target` -> `spec.target`, + 1 -> `spec.x[1]`."""
    return f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}"


def _type_name(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def opt_str(obj: Mapping[str, Any], key: str, path: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidSpec(child(path, key), f"must be a string, not {_type_name(value)}")
    return value


def req_str(obj: Mapping[str, Any], key: str, path: str) -> str:
    value = opt_str(obj, key, path)
    if value is None or value == "":
        raise InvalidSpec(child(path, key), "is required")
    return value


def opt_int(
    obj: Mapping[str, Any], key: str, path: str, *, low: int, high: int | None = None
) -> int | None:
    """An integer in [low, high]; bools are refused although Python calls them ints."""
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidSpec(child(path, key), f"must be an integer, not {_type_name(value)}")
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise InvalidSpec(child(path, key), f"must be {bounds}, not {value}")
    return value


def opt_bool(obj: Mapping[str, Any], key: str, path: str) -> bool | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise InvalidSpec(child(path, key), f"must be true or false, not {_type_name(value)}")
    return value


def opt_map(obj: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any] | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidSpec(child(path, key), f"must be an object, not {_type_name(value)}")
    return value


def opt_list(obj: Mapping[str, Any], key: str, path: str) -> Sequence[Any] | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise InvalidSpec(child(path, key), f"must be a list, not {_type_name(value)}")
    return value
