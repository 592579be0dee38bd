"""The token cache: one load per key in flight, refresh ahead of expiry, grace, discard."""

from __future__ import annotations

import asyncio

import pytest

from gcpcall.gcp.tokens import AccessToken, Expiring, SingleFlightCache


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Loader:
    """Counts loads; each returns value `n` valid for `lifetime` seconds of the fake clock."""

    def __init__(self, clock: FakeClock, lifetime: float = 3600.0) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.count = 0
        self.gate: asyncio.Event | None = None
        self.fail_with: Exception | None = None

    async def __call__(self) -> Expiring[int]:
        self.count += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_with is not None:
            raise self.fail_with
        return Expiring(self.count, self.clock() + self.lifetime)


async def test_concurrent_gets_share_one_load() -> None:
    clock = FakeClock()
    cache: SingleFlightCache[str, int] = SingleFlightCache(clock=clock)
    load = Loader(clock)
    load.gate = asyncio.Event()
    waiters = [asyncio.ensure_future(cache.get("k", load)) for _ in range(50)]
    await asyncio.sleep(0)
    load.gate.set()
    assert await asyncio.gather(*waiters) == [1] * 50
    assert load.count == 1
    assert await cache.get("k", load) == 1  # served from the cache afterwards
    assert load.count == 1


async def test_keys_load_independently() -> None:
    clock = FakeClock()
    cache: SingleFlightCache[str, int] = SingleFlightCache(clock=clock)
    loads = {k: Loader(clock) for k in ("a", "b")}
    assert await cache.get("a", loads["a"]) == 1
    assert await cache.get("b", loads["b"]) == 1
    assert (loads["a"].count, loads["b"].count) == (1, 1)


async def test_refreshes_ahead_of_expiry() -> None:
    clock = FakeClock()
    cache: SingleFlightCache[str, int] = SingleFlightCache(clock=clock, refresh_margin=300)
    load = Loader(clock, lifetime=3600)
    assert await cache.get("k", load) == 1
    clock.now += 3600 - 301  # 301 s left: still good
    assert await cache.get("k", load) == 1
    clock.now += 2  # 299 s left: inside the margin, refreshed before anyone uses it
    assert await cache.get("k", load) == 2
    entry = cache.peek("k")
    assert entry is not None
    assert entry.expires_at == clock.now + 3600


async def test_a_short_lived_value_is_refreshed_at_three_quarters_of_its_life() -> None:
    """A 120 s token under a 300 s margin: kept for 90 s, not reloaded on every get."""
    clock = FakeClock()
    cache: SingleFlightCache[str, int] = SingleFlightCache(clock=clock, refresh_margin=300)
    load = Loader(clock, lifetime=120)
    assert await cache.get("k", load) == 1
    assert cache.fresh("k")
    clock.now += 89
    assert await cache.get("k", load) == 1
    assert load.count == 1
    clock.now += 2  # 91 s into a 120 s life: past three quarters
    assert not cache.fresh("k")
    assert await cache.get("k", load) == 2
    assert cache.fresh("k")


async def test_failed_refresh_keeps_a_still_valid_value() -> None:
    clock = FakeClock()
    cache: SingleFlightCache[str, int] = SingleFlightCache(
        clock=clock, refresh_margin=300, grace=30
    )
    load = Loader(clock, lifetime=3600)
    assert await cache.get("k", load) == 1
    clock.now += 3400  # 200 s left
    load.fail_with = RuntimeError("STS down")
    assert await cache.get("k", load) == 1  # old token still has 200 s
    clock.now += 190  # 10 s left: less than the grace, the failure surfaces
    with pytest.raises(RuntimeError, match="STS down"):
        await cache.get("k", load)


async def test_failure_is_remembered_for_failure_ttl() -> None:
    clock = FakeClock()
    cache: SingleFlightCache[str, int] = SingleFlightCache(clock=clock, failure_ttl=5)
    load = Loader(clock)
    load.fail_with = PermissionError("denied")
    for _ in range(3):
        with pytest.raises(PermissionError):
            await cache.get("k", load)
    assert load.count == 1  # the two retries inside failure_ttl did not call again
    clock.now += 6
    load.fail_with = None
    assert await cache.get("k", load) == 2


async def test_discard_forgets_values_and_failures() -> None:
    clock = FakeClock()
    cache: SingleFlightCache[tuple[str, str], int] = SingleFlightCache(clock=clock, failure_ttl=60)
    load = Loader(clock)
    assert await cache.get(("ns", "a"), load) == 1
    assert await cache.get(("ns", "b"), load) == 2
    assert cache.discard(lambda k: k[1] == "a") == 1
    assert await cache.get(("ns", "b"), load) == 2  # untouched
    assert await cache.get(("ns", "a"), load) == 3  # loaded again
    load.fail_with = RuntimeError("x")
    with pytest.raises(RuntimeError):
        await cache.get(("ns", "c"), load)
    cache.discard(lambda k: k[1] == "c")
    load.fail_with = None
    assert await cache.get(("ns", "c"), load) == 5  # the remembered failure was dropped


async def test_discard_during_a_load_answers_waiters_but_keeps_nothing() -> None:
    clock = FakeClock()
    cache: SingleFlightCache[str, int] = SingleFlightCache(clock=clock)
    load = Loader(clock)
    load.gate = asyncio.Event()
    waiter = asyncio.ensure_future(cache.get("k", load))
    await asyncio.sleep(0)
    cache.discard(lambda k: True)
    load.gate.set()
    assert await waiter == 1
    assert cache.peek("k") is None
    load.gate = None
    assert await cache.get("k", load) == 2


async def test_a_cancelled_waiter_does_not_cancel_the_shared_load() -> None:
    clock = FakeClock()
    cache: SingleFlightCache[str, int] = SingleFlightCache(clock=clock)
    load = Loader(clock)
    load.gate = asyncio.Event()
    first = asyncio.ensure_future(cache.get("k", load))
    second = asyncio.ensure_future(cache.get("k", load))
    await asyncio.sleep(0)
    first.cancel()
    load.gate.set()
    assert await second == 1
    assert first.cancelled()
    assert load.count == 1


def test_access_token_repr_hides_the_token() -> None:
    token = AccessToken("ya29.secret-value", "a@p.iam.gserviceaccount.com", 5.0)
    assert "secret" not in repr(token)
    assert "a@p.iam.gserviceaccount.com" in repr(token)


async def test_expired_values_of_unused_keys_are_dropped() -> None:
    clock = FakeClock()
    cache: SingleFlightCache[str, int] = SingleFlightCache(clock=clock)
    load = Loader(clock, lifetime=600)
    for key in ("gone-1", "gone-2", "kept"):
        await cache.get(key, load)
    clock.now += 601
    await cache.get("kept", load)  # a load prunes what expired meanwhile
    assert cache.keys() == ["kept"]
