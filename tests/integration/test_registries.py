"""Objects that vanish without our cleanup leave no trace in the operator's registries.

A finalizer removed by hand, or a namespace force-deleted, means the operator never runs
its deletion: the DELETED watch event is all it sees. The sync, the poller and the status
writer must drop such objects at once, or they leak and keep costing ListJobs. The counts
are read from the operator's own metrics endpoint (`gcpcall_tracked_objects`).
"""

from __future__ import annotations

import re
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from tests.integration.conftest import (
    Emulator,
    Objects,
    Operator,
    instead_of,
    own_operator_for,
    wait_for,
)
from tests.integration.test_gcptask_lifecycle import later, make_queue, wait_phase
from tests.integration.test_gcptask_lifecycle import sample as task_sample
from tests.integration.test_scheduled_lifecycle import ready, sample

if TYPE_CHECKING:
    from tests.conftest import ControlPlane

COUNT = 100  # of each kind: 200 objects in all


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def metered(
    operator: Operator, controlplane: ControlPlane, emulator: Emulator, namespace: str,
    tmp_path: Path,
) -> Iterator[tuple[Operator, int]]:
    """An operator of this test's own, on this namespace only, with its metrics served."""
    port = _free_port()
    mine = own_operator_for(controlplane, emulator, tmp_path / "operator.log", namespace,
                            "--metrics-port", str(port), "--metrics-address", "127.0.0.1")
    with instead_of(operator, mine):
        yield mine, port


def tracked(port: int) -> dict[str, float]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("gcpcall_tracked_objects{"):
            labels, value = line.rsplit(" ", 1)
            out[labels.split('loop="', 1)[1].split('"', 1)[0]] = float(value)
    return out


def test_objects_deleted_without_our_finalizer_leave_every_registry(
    metered: tuple[Operator, int], sgc: Objects, gtask: Objects, namespace: str,
    emulator: Emulator,
) -> None:
    _, port = metered
    make_queue(emulator, namespace)
    for i in range(COUNT):
        sgc.create(namespace, sample(f"leak-{i}"))
        gtask.create(namespace, task_sample(f"leak-{i}", namespace, f"/leak/{i}",
                                            scheduleTime=later(3600)))
    for i in range(COUNT):
        ready(sgc, namespace, f"leak-{i}")
        wait_phase(gtask, namespace, f"leak-{i}", "Queued")
    counts = wait_for(lambda: (c := tracked(port)) and c.get("sync") == COUNT
                      and c.get("poller") == COUNT and c, what="every object tracked")
    assert counts["status"] >= 2 * COUNT

    for i in range(COUNT):  # as a user forcing it: the finalizer removed by hand, then deleted
        for objects in (sgc, gtask):
            objects.patch(namespace, f"leak-{i}", {"metadata": {"finalizers": None}})
            objects.delete(namespace, f"leak-{i}")
    final = wait_for(lambda: (c := tracked(port)) and c.get("sync") == 0
                     and c.get("poller") == 0 and c.get("status") == 0 and c,
                     timeout=60, what="nothing tracked any more")
    assert final.get("deletions", 0) == 0
    assert final.get("queue-waits", 0) == 0


def test_every_metric_the_dashboard_and_alerts_read_is_exported(
    metered: tuple[Operator, int], sgc: Objects, namespace: str
) -> None:
    """The other side of tests/unit/test_dashboard.py's contract: a running operator's
    /metrics declares every metric the chart's dashboard and alerts use, with that type."""
    from tests.unit.test_dashboard import METRICS

    _, port = metered
    sgc.create(namespace, sample("scraped"))
    ready(sgc, namespace, "scraped")
    text = wait_for(lambda: _scrape(port), what="the metrics endpoint")
    declared = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.M))
    for name, metric in METRICS.items():
        base = name.removesuffix("_total")
        assert declared.get(base) == metric.type or declared.get(name) == metric.type, name


def _scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            return str(resp.read().decode())
    except OSError:
        return ""
