"""Spec fields both kinds share besides `target`: delivery, operation, deletion policy.

Why separate: ScheduledGcpCall and GcpTask parse these identically, and the relay reads
`Delivery`/`OperationPolicy` without caring which kind it serves.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from gcpcall.api._fields import child, opt_bool, opt_int, opt_map, opt_str
from gcpcall.api.errors import InvalidSpec

__all__ = [
    "DeletionPolicy",
    "Delivery",
    "OperationPolicy",
    "RelayTarget",
    "parse_deletion_policy",
    "parse_delivery",
    "parse_operation",
]

E = TypeVar("E", bound=StrEnum)


class Delivery(StrEnum):
    DIRECT = "Direct"
    RELAY = "Relay"


class DeletionPolicy(StrEnum):
    DELETE = "Delete"
    ABANDON = "Abandon"


@dataclass(frozen=True)
class OperationPolicy:
    """Relay only: follow the long-running operation the call returns."""

    follow: bool = True
    timeout_seconds: int = 3600


@dataclass(frozen=True)
class RelayTarget:
    """Where a Relay-delivery job/task sends its request instead of `target.uri`.

    Built by the caller from the operator's relay URL and the relay's own request format;
    the mappers only place it. Google signs an OIDC token for the identity's service
    account with `audience` (the relay URL when empty).
    """

    url: str
    body: bytes
    audience: str = ""
    content_type: str = "application/json"


def _enum_field(
    spec: Mapping[str, Any], key: str, path: str, enum: type[E], default: E
) -> E:
    raw = opt_str(spec, key, path)
    if raw is None:
        return default
    try:
        return enum(raw)
    except ValueError:
        allowed = " or ".join(e.value for e in enum)
        raise InvalidSpec(child(path, key), f"{raw!r} is not {allowed}") from None


def parse_delivery(spec: Mapping[str, Any], path: str) -> Delivery:
    return _enum_field(spec, "delivery", path, Delivery, Delivery.DIRECT)


def parse_deletion_policy(spec: Mapping[str, Any], path: str) -> DeletionPolicy:
    return _enum_field(spec, "deletionPolicy", path, DeletionPolicy, DeletionPolicy.DELETE)


def parse_operation(
    spec: Mapping[str, Any], path: str, delivery: Delivery
) -> OperationPolicy | None:
    raw = opt_map(spec, "operation", path)
    if raw is None:
        return None
    op_path = child(path, "operation")
    if delivery is not Delivery.RELAY:
        raise InvalidSpec(op_path, "is only allowed with delivery: Relay (only the relay "
                                   "sees the response, so only it can follow the operation)")
    follow = opt_bool(raw, "follow", op_path)
    timeout = opt_int(raw, "timeoutSeconds", op_path, low=1, high=604800)
    return OperationPolicy(
        follow=True if follow is None else follow,
        timeout_seconds=3600 if timeout is None else timeout,
    )
