"""Serving Google's proto-plus messages over gRPC without protoc, with auth, faults and a
call log.

Why: both service halves register unary methods the same way (the message classes the
client libraries ship as (de)serializers), and every served call must pass through the
bearer-token check (`rpcauth`, opt-in), the fault injector, and land in the call log with
its caller and the code it ended with. One wrapper does it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import grpc
from google.protobuf import duration_pb2, timestamp_pb2

from gcpcall.emulator.core import CallLog, Clock, Dispatcher, FaultInjector, TokenIssuer
from gcpcall.emulator.rpcauth import AuthRefused, RpcAuth

__all__ = [
    "ApiError",
    "EmulatorCore",
    "MessageClass",
    "UnaryMethod",
    "duration_seconds",
    "generic_handler",
    "seconds_duration",
    "timestamp_of",
]

log = logging.getLogger(__name__)


class EmulatorCore(Protocol):
    """What a service half needs from the emulator that hosts it."""

    clock: Clock
    dispatcher: Dispatcher
    tokens: TokenIssuer
    faults: FaultInjector
    calls: CallLog
    auth: RpcAuth


class ApiError(Exception):
    """An RPC refusal: the handler raises it, the wrapper turns it into the status."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class MessageClass(Protocol):
    """A proto-plus message class (or a raw protobuf class wrapped to look like one)."""

    def deserialize(self, payload: bytes) -> Any: ...

    def serialize(self, message: Any) -> bytes: ...


UnaryMethod = Callable[[Any], Awaitable[Any]]


def generic_handler(
    core: EmulatorCore,
    service: str,
    methods: Mapping[str, tuple[UnaryMethod, Any, Any]],
) -> Any:
    """A grpc.GenericRpcHandler serving `methods`: name -> (fn, request class, response class).

    Response classes are proto-plus classes or raw protobuf classes (like Empty).
    """
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            _served(core, service, name, fn),
            request_deserializer=_deserializer(request_cls),
            response_serializer=_serializer(response_cls),
        )
        for name, (fn, request_cls, response_cls) in methods.items()
    }
    return grpc.method_handlers_generic_handler(service, handlers)


def _deserializer(cls: Any) -> Callable[[bytes], Any]:
    if hasattr(cls, "deserialize"):
        return cls.deserialize  # type: ignore[no-any-return]
    return cls.FromString  # type: ignore[no-any-return]


def _serializer(cls: Any) -> Callable[[Any], bytes]:
    if hasattr(cls, "serialize"):
        return cls.serialize  # type: ignore[no-any-return]
    return lambda message: message.SerializeToString()


def _served(
    core: EmulatorCore, service: str, method: str, fn: UnaryMethod
) -> Callable[[Any, Any], Awaitable[Any]]:
    async def serve(request: Any, context: Any) -> Any:
        try:
            caller = core.auth.authenticate(context.invocation_metadata())
        except AuthRefused as refused:
            core.calls.record(service, method, refused.code, None)
            await context.abort(refused.code, refused.message)
        principal = caller.principal if caller is not None else None
        latency, fault = core.faults.decide(method)
        if latency > 0:
            await core.clock.sleep(latency)
        if fault is not None:
            core.calls.record(service, method, fault, principal)
            await context.abort(fault, f"injected fault: {fault.name} for {method}")
        try:
            with core.auth.acting_as(caller):
                response = await fn(request)
        except (ApiError, AuthRefused) as error:
            core.calls.record(service, method, error.code, principal)
            await context.abort(error.code, error.message)
        except Exception:
            log.exception("emulator %s/%s failed", service, method)
            core.calls.record(service, method, grpc.StatusCode.INTERNAL, principal)
            await context.abort(grpc.StatusCode.INTERNAL, "emulator internal error")
        core.calls.record(service, method, grpc.StatusCode.OK, principal)
        return response

    return serve


def timestamp_of(seconds: float) -> timestamp_pb2.Timestamp:
    """A protobuf Timestamp for POSIX seconds."""
    stamp = timestamp_pb2.Timestamp()
    whole = int(seconds // 1)
    stamp.seconds = whole
    stamp.nanos = round((seconds - whole) * 1e9) % 1_000_000_000
    return stamp


def seconds_duration(seconds: float) -> duration_pb2.Duration:
    """A protobuf Duration for a number of seconds."""
    duration = duration_pb2.Duration()
    whole = int(seconds)
    duration.seconds = whole
    duration.nanos = round((seconds - whole) * 1e9)
    return duration


def duration_seconds(value: Any) -> float:
    """Seconds in a Duration, whichever form proto-plus hands it over in."""
    if value is None:
        return 0.0
    if hasattr(value, "total_seconds"):
        return float(value.total_seconds())
    return float(value.seconds) + float(value.nanos) / 1e9
