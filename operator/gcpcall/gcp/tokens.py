"""A cache of expiring values with one refresh in flight per key: the token cache.

Why our own: google-auth's credentials refresh synchronously and are not single-flight, so
200 reconciles of one identity arriving together would make 200 token exchanges (the
problem External Secrets Operator users hit as expired or throttled tokens). Here every
caller of one key awaits the same refresh; a value is refreshed `refresh_margin` seconds
before it expires (or, for a value loaded with less than four margins to live, once three
quarters of its life have passed), so no caller ever gets a token about to lapse mid-call
and a short-lived token is not reloaded on every use; a failed refresh
is remembered for `failure_ttl` seconds so a broken identity does not hammer Google.

The clock is injectable so tests move time instead of waiting for it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

__all__ = ["AccessToken", "Expiring", "SingleFlightCache"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(frozen=True)
class AccessToken:
    """An OAuth access token and whose it is. `value` None means anonymous (no header)."""

    value: str | None
    email: str | None
    expires_at: float = math.inf  # POSIX seconds

    def __repr__(self) -> str:  # never print the token
        return f"AccessToken(email={self.email!r}, expires_at={self.expires_at!r})"


@dataclass(frozen=True)
class Expiring(Generic[V]):
    """A cached value and the POSIX time it stops being usable."""

    value: V
    expires_at: float


@dataclass(frozen=True)
class _Entry(Generic[V]):
    """A cached value and the POSIX time after which `get` reloads it."""

    value: Expiring[V]
    refresh_at: float


@dataclass
class _Failure:
    error: BaseException
    until: float


@dataclass(eq=False)
class _Flight(Generic[V]):
    """One load in progress; `discarded` when the key was forgotten while it ran."""

    future: asyncio.Future[Expiring[V]] | None = None
    discarded: bool = False


class SingleFlightCache(Generic[K, V]):
    """Values per key, each refreshed by at most one task at a time.

    `get(key, load)` returns the cached value while it has more than `refresh_margin`
    seconds left (a quarter of the life it was loaded with, if that is less); otherwise it
    starts `load()` (or joins the load already running for the key) and returns its result.
    If the load fails while the old value is still valid for at least `grace` seconds, the
    old value is returned: a Google hiccup near expiry does not fail calls that can still
    succeed.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        refresh_margin: float = 300.0,
        failure_ttl: float = 0.0,
        grace: float = 30.0,
    ) -> None:
        self._clock = clock
        self.refresh_margin = refresh_margin
        self.failure_ttl = failure_ttl
        self.grace = grace
        self._entries: dict[K, _Entry[V]] = {}
        self._inflight: dict[K, _Flight[V]] = {}
        self._failures: dict[K, _Failure] = {}

    def peek(self, key: K) -> Expiring[V] | None:
        """The cached entry for `key`, fresh or not, without loading anything."""
        entry = self._entries.get(key)
        return entry.value if entry is not None else None

    def fresh(self, key: K) -> bool:
        """Whether `get(key)` would answer from the cache without starting a load."""
        entry = self._entries.get(key)
        return entry is not None and self._clock() < entry.refresh_at

    def keys(self) -> list[K]:
        """Keys with a cached value, a load in flight or a remembered failure."""
        return list({*self._entries, *self._inflight, *self._failures})

    async def get(self, key: K, load: Callable[[], Awaitable[Expiring[V]]]) -> V:
        """The value for `key`, loading it (once, for all concurrent callers) if needed."""
        now = self._clock()
        cached = self._entries.get(key)
        if cached is not None and now < cached.refresh_at:
            return cached.value.value
        entry = cached.value if cached is not None else None
        failure = self._failures.get(key)
        if failure is not None:
            if failure.until > now:
                if entry is not None and entry.expires_at - now > self.grace:
                    return entry.value
                raise failure.error
            del self._failures[key]
        flight = self._inflight.get(key)
        if flight is None or flight.future is None:
            flight = _Flight()
            flight.future = asyncio.ensure_future(self._load(key, flight, load))
            flight.future.add_done_callback(_consume_exception)
            self._inflight[key] = flight
        try:
            # shield: a caller cancelled while waiting must not cancel everyone's refresh
            return (await asyncio.shield(flight.future)).value
        except Exception:
            entry = self.peek(key)
            if entry is not None and entry.expires_at - self._clock() > self.grace:
                return entry.value
            raise

    async def _load(
        self, key: K, flight: _Flight[V], load: Callable[[], Awaitable[Expiring[V]]]
    ) -> Expiring[V]:
        try:
            entry = await load()
        except Exception as error:
            if self.failure_ttl > 0 and not flight.discarded:
                self._failures[key] = _Failure(error, self._clock() + self.failure_ttl)
            raise
        finally:
            if self._inflight.get(key) is flight:
                del self._inflight[key]
        # A `discard` while the load ran means its result is stale (the KSA changed, the
        # token was rejected): it still answers the callers already waiting, but is not kept.
        if not flight.discarded:
            self._prune()
            now = self._clock()
            margin = min(self.refresh_margin, max(0.0, entry.expires_at - now) / 4)
            self._entries[key] = _Entry(entry, entry.expires_at - margin)
        return entry

    def _prune(self) -> None:
        """Drop expired values and failures (identities nobody resolves any more), so the
        cache stays as large as the set of identities in use. Loads are rare (one per
        identity per token lifetime), so a scan per load costs nothing."""
        now = self._clock()
        for key in [k for k, e in self._entries.items() if e.value.expires_at <= now]:
            del self._entries[key]
        for key in [k for k, f in self._failures.items() if f.until <= now]:
            del self._failures[key]

    def discard(self, predicate: Callable[[K], bool]) -> int:
        """Forget values, loads in flight and failures of every key matching `predicate`."""
        removed = 0
        for key in [k for k in self._entries if predicate(k)]:
            del self._entries[key]
            removed += 1
        for key in [k for k in self._failures if predicate(k)]:
            del self._failures[key]
        for key in [k for k in self._inflight if predicate(k)]:
            self._inflight.pop(key).discarded = True
        return removed


def _consume_exception(future: asyncio.Future[Any]) -> None:
    """Mark a load's exception as retrieved: its callers may all have been cancelled."""
    if not future.cancelled():
        future.exception()
