"""The status writer keeps each object's base compactly and hands out copies of it.

Why: the base is the one copy of each object's status held at rest (P4), so it is kept as
JSON; what a reader gets must be its own, and a write must still be computed over it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from typing import Any, cast

from gcpcall.api.status import ReadyReason, ready_condition, reconciler_part
from gcpcall.kube import ObjectRef
from gcpcall.reconcile.status_writer import StatusWriter
from tests.unit._fakes import FakeClock, FakeKube

REF = ObjectRef("ScheduledGcpCall", "scheduledgcpcalls", "ns", "a", "uid-a")


def _writer(kube: FakeKube) -> StatusWriter:
    return StatusWriter(cast(Any, kube), clock=FakeClock())


def test_a_written_status_is_known_and_a_reader_cannot_change_it() -> None:
    kube = FakeKube()
    kube.add(REF, {"jobName": "projects/p/locations/l/jobs/j", "runs": [{"code": 0}]})
    writer = _writer(kube)
    part = reconciler_part(ready_condition(ReadyReason.UP_TO_DATE, "in step"), generation=1)
    written = asyncio.run(writer.write(REF, False, part))

    assert written is not None
    assert written.before == {"jobName": "projects/p/locations/l/jobs/j", "runs": [{"code": 0}]}
    known = writer.known(REF)
    assert known["observedGeneration"] == 1
    assert known["runs"] == [{"code": 0}]
    assert [c["reason"] for c in known["conditions"]] == ["UpToDate"]
    known["runs"].append({"code": 5})  # a careless reader
    assert writer.known(REF)["runs"] == [{"code": 0}]
    # The same part again changes nothing: no second patch.
    assert asyncio.run(writer.write(REF, False, part)) is None
    assert len(kube.patches) == 1


def test_a_watched_status_with_read_only_views_is_kept() -> None:
    class View(Mapping[str, Any]):
        """Stands for a kopf mapping view: a Mapping json cannot take as it is."""

        def __init__(self, **data: Any) -> None:
            self._data = data

        def __getitem__(self, key: str) -> Any:
            return self._data[key]

        def __iter__(self) -> Iterator[str]:
            return iter(self._data)

        def __len__(self) -> int:
            return len(self._data)

    writer = _writer(FakeKube())
    body = {"metadata": {"generation": 2, "resourceVersion": "7"},
            "status": {"identity": View(name="default"), "observedGeneration": 2}}
    writer.seen(REF, body)
    assert writer.known(REF) == {"identity": {"name": "default"}, "observedGeneration": 2}
    assert writer.generation(REF) == 2


def test_may_hold_is_false_only_when_the_known_status_has_no_such_string() -> None:
    writer = _writer(FakeKube())
    # nothing known: the caller must look at what it observed
    assert writer.may_hold(REF, "2026-01-01T00:00:00Z")
    writer.seen(REF, {"metadata": {"generation": 1, "resourceVersion": "7"},
                      "status": {"runs": [{"scheduleTime": "2026-01-01T00:00:00Z"}],
                                 "message": 'said "2026-01-02T00:00:00Z!"'}})
    assert writer.may_hold(REF, "2026-01-01T00:00:00Z")
    assert not writer.may_hold(REF, "2026-01-03T00:00:00Z")
    # a longer string that merely contains the value is not the value
    assert not writer.may_hold(REF, "2026-01-02T00:00:00Z")
