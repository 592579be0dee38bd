"""Telling the objects that wait out a Google outage that the service answers again.

Why: during an outage every object backs off on its own, up to minutes, and nothing tells
them when the service is back, so the last ones came back minutes after it did (177 s
after a 90 s outage of 400 objects). Here a service that stops answering (UNAVAILABLE,
DEADLINE_EXCEEDED or no connection, several times in a row) is marked down; the objects
waiting for it wait on one
signal instead of their own backoff, and one of them at a time, the probe, tries again
every few seconds. The first call that succeeds, the probe's or any other, wakes them all.
So the request rate during an outage stays one probe every few seconds per service (plus
the waits that end on their own), and recovery is seen within seconds.
"""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["OUTAGE_CODES", "Recovery"]

OUTAGE_CODES = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED"})
PROBE_SECONDS = 5.0
# Outage failures in a row, with no success between, that make the service "down": a
# service failing some calls now and then is not down, and its objects keep their own
# backoff (waking them all at every success would be a retry storm).
DOWN_AFTER = 3
LONGEST_WAIT = 300.0  # what a waiter waits at most, should the signal never come


class Recovery:
    """One service's state: answering, or down until a call succeeds."""

    def __init__(self, probe_seconds: float = PROBE_SECONDS,
                 down_after: int = DOWN_AFTER, longest: float = LONGEST_WAIT) -> None:
        self.probe_seconds = probe_seconds
        self.longest = longest
        self.down_after = down_after
        self._failures = 0
        self._down = False
        self._back: asyncio.Event | None = None
        self._probing = False

    @property
    def down(self) -> bool:
        return self._down

    def failed(self, code: str) -> None:
        if code not in OUTAGE_CODES:
            return
        self._failures += 1
        if self._failures >= self.down_after and not self._down:
            self._down = True
            self._back = asyncio.Event()

    def succeeded(self) -> None:
        self._failures = 0
        if self._down:
            self._down = False
            if self._back is not None:
                self._back.set()

    async def wait(self, delay: float) -> None:
        """While the service is up: `delay` seconds. While it is down: until it answers
        again (at most `longest`), or, for the one probe, `probe_seconds`."""
        back = self._back
        if not self._down or back is None:
            await asyncio.sleep(delay)
            return
        probe = not self._probing
        if probe:
            self._probing = True
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(back.wait(),
                                       self.probe_seconds if probe else self.longest)
        finally:
            if probe:
                self._probing = False
