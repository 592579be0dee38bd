"""Prometheus counters for the identity chain: how many token requests, at which step.

Why separate: the P6 target (at most a couple of token requests per identity per hour)
and every "IdentityNotReady" investigation start from these numbers, so they are declared
once, with the step names the diagnostics use. Labels never carry a token, a namespace or
a service account (unbounded cardinality and, for tokens, a leak).
"""

from __future__ import annotations

from prometheus_client import Counter

__all__ = ["CACHE_LOOKUPS", "TOKEN_REQUESTS", "count_request"]

TOKEN_REQUESTS = Counter(
    "gcpcall_identity_token_requests_total",
    "Requests made to obtain credentials, by step of the identity chain and result",
    ["step", "result"],
)
CACHE_LOOKUPS = Counter(
    "gcpcall_identity_cache_lookups_total",
    "Identity resolutions, by whether the cached token was used (hit) or one was minted (miss)",
    ["mode", "result"],
)


def count_request(step: str, ok: bool) -> None:
    """Count one request of `step` ("TokenRequest", "STS", ...) and whether it succeeded."""
    TOKEN_REQUESTS.labels(step=step, result="ok" if ok else "error").inc()
