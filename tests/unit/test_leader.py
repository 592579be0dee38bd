"""Leader election on a Lease, client-go style: take it when free or expired, renew it,
never take it from a holder that renews, and count transitions."""

from __future__ import annotations

import copy
import datetime
from typing import Any, cast

from gcpcall.handlers.leader import Elector, LeaseSettings
from gcpcall.kube import KubeError

T0 = datetime.datetime(2026, 12, 1, 12, 0, tzinfo=datetime.UTC)


class Leases:
    """One Lease object with resourceVersion semantics (conditional replace)."""

    def __init__(self) -> None:
        self.doc: dict[str, Any] | None = None
        self.rv = 0

    async def get_lease(self, ns: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.doc)

    async def create_lease(self, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.doc is not None:
            raise KubeError(409, "AlreadyExists", "exists")
        self.rv += 1
        self.doc = {**body, "metadata": {**body["metadata"], "resourceVersion": str(self.rv)}}
        return copy.deepcopy(self.doc)

    async def replace_lease(self, ns: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        assert self.doc is not None
        if body["metadata"]["resourceVersion"] != self.doc["metadata"]["resourceVersion"]:
            raise KubeError(409, "Conflict", "modified")
        self.rv += 1
        self.doc = copy.deepcopy(body)
        self.doc["metadata"]["resourceVersion"] = str(self.rv)
        return copy.deepcopy(self.doc)


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> datetime.datetime:
        return self.t


async def test_the_first_takes_it_and_the_second_waits_until_it_expires() -> None:
    leases, clock = Leases(), Clock()
    settings = LeaseSettings(duration=15, renew=10, retry=2)
    a = Elector(cast(Any, leases), settings, identity="a", now=clock)
    b = Elector(cast(Any, leases), settings, identity="b", now=clock)
    assert await a._try()
    assert not await b._try()
    clock.t += datetime.timedelta(seconds=10)
    assert await a._try()  # a renews
    clock.t += datetime.timedelta(seconds=14)
    assert not await b._try()  # renewed 14 s ago: still a's
    clock.t += datetime.timedelta(seconds=2)
    assert await b._try()  # 16 s without renewal: b takes it
    assert leases.doc is not None
    assert leases.doc["spec"]["holderIdentity"] == "b"
    assert leases.doc["spec"]["leaseTransitions"] == 1
    assert not await a._try()  # and a, back from a pause, does not take it back


async def test_a_leader_that_finds_another_holder_stops_at_once() -> None:
    leases, clock = Leases(), Clock()
    settings = LeaseSettings(duration=15, renew=0.01, retry=0.01)
    a = Elector(cast(Any, leases), settings, identity="a", now=clock)
    b = Elector(cast(Any, leases), settings, identity="b", now=clock)
    assert await a._try()
    clock.t += datetime.timedelta(seconds=20)  # a was paused past the lease duration
    assert await b._try()
    lost: list[str] = []
    await a.keep(lambda: lost.append("a"))
    assert lost == ["a"]


async def test_a_released_lease_is_taken_at_once_and_only_its_holder_releases_it() -> None:
    leases, clock = Leases(), Clock()
    settings = LeaseSettings(duration=15, renew=10, retry=2)
    a = Elector(cast(Any, leases), settings, identity="a", now=clock)
    b = Elector(cast(Any, leases), settings, identity="b", now=clock)
    assert await a._try()
    await b.release()  # not b's to give up: nothing changes
    assert leases.doc is not None
    assert leases.doc["spec"]["holderIdentity"] == "a"
    await a.release()
    assert "holderIdentity" not in leases.doc["spec"]
    assert leases.doc["spec"]["leaseDurationSeconds"] == 1
    assert await b._try()  # no need to wait the 15 s out
    assert leases.doc["spec"]["holderIdentity"] == "b"
    assert leases.doc["spec"]["leaseTransitions"] == 1


class Unreachable(Leases):
    """The API server stops answering after the Lease was taken."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.tries = 0

    async def get_lease(self, ns: str, name: str) -> dict[str, Any] | None:
        if self.down:
            self.tries += 1
            raise OSError("connection refused")
        return await super().get_lease(ns, name)


async def test_a_leader_that_cannot_renew_retries_then_stops_at_the_renew_deadline() -> None:
    leases = Unreachable()
    # the deadline (renew) is shorter than the duration: the leader stops before a standby
    # may take the Lease
    a = Elector(cast(Any, leases), LeaseSettings(duration=15, renew=0.2, retry=0.02),
                identity="a")
    assert await a._try()
    leases.down = True
    lost: list[str] = []
    await a.keep(lambda: lost.append("a"))
    assert lost == ["a"]
    assert leases.tries >= 3  # retried every `retry` seconds before giving up
