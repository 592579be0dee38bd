"""gRPC channels to Cloud Scheduler and Cloud Tasks, one per service for the process.

Why channels without call credentials: each object acts as its own Google identity, so the
bearer token goes on each call (`metadata`), not on the channel. One channel per service is
shared by every identity; creating a client per identity would open a connection each.
"""

from __future__ import annotations

import grpc

from gcpcall.config import Endpoints

__all__ = ["open_channel"]

_OPTIONS = [
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.max_receive_message_length", 32 * 1024 * 1024),
]


def open_channel(target: str, endpoints: Endpoints) -> grpc.aio.Channel:
    """A channel to `target`: TLS to Google, plaintext only when the settings say so."""
    if endpoints.grpc_insecure:
        return grpc.aio.insecure_channel(target, options=_OPTIONS)
    return grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(), options=_OPTIONS)
