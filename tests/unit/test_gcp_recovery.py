"""The shared recovery signal: down after failures in a row, one probe, all woken at once."""

from __future__ import annotations

import asyncio

from gcpcall.gcp.recovery import Recovery


async def test_a_service_failing_now_and_then_is_not_down() -> None:
    r = Recovery(down_after=3)
    for _ in range(10):
        r.failed("UNAVAILABLE")
        r.failed("UNAVAILABLE")
        r.succeeded()
    assert not r.down
    r.failed("PERMISSION_DENIED")
    r.failed("PERMISSION_DENIED")
    r.failed("PERMISSION_DENIED")
    assert not r.down  # not an outage: the object's own slow retry applies


async def test_waiters_wake_together_when_the_service_answers_again() -> None:
    r = Recovery(probe_seconds=0.05, down_after=2)
    r.failed("UNAVAILABLE")
    r.failed("DEADLINE_EXCEEDED")
    assert r.down
    loop = asyncio.get_running_loop()
    start = loop.time()
    waiters = [asyncio.create_task(r.wait(300.0)) for _ in range(50)]
    await asyncio.sleep(0.2)
    # one of them is the probe: it came back after probe_seconds, the rest still wait
    assert sum(w.done() for w in waiters) == 1
    r.succeeded()
    await asyncio.wait_for(asyncio.gather(*waiters), 1.0)
    assert loop.time() - start < 5.0
    assert not r.down
