"""The operator's log with `--log-format json`, as a log store would ingest it.

The session operator is stopped and one is run with `--log-format json` on one namespace;
a valid ScheduledGcpCall and an InvalidSpec one are created, edited and run (many watch
events, several Google calls with the emulator's `ya29.emu.` tokens). Then every line of the
log must be one JSON object with the four fields, every line about one of the objects must
carry its namespace, name and uid, no INFO line is written per watch event, and no line
holds a token.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from tests.integration.conftest import (
    Emulator,
    Objects,
    Operator,
    instead_of,
    own_operator_for,
    wait_for,
)
from tests.integration.test_scheduled_lifecycle import ready, sample

if TYPE_CHECKING:
    from tests.conftest import ControlPlane


@pytest.fixture
def json_operator(
    operator: Operator, controlplane: ControlPlane, emulator: Emulator, namespace: str,
    tmp_path: Path,
) -> Iterator[Operator]:
    mine = own_operator_for(controlplane, emulator, tmp_path / "operator.log", namespace,
                            "--log-format", "json", GCPCALL_UNKNOWN_KNOB="1")
    with instead_of(operator, mine):
        yield mine


def parsed(op: Operator) -> list[dict[str, Any]]:
    lines = [line for line in op.log().splitlines() if line.strip()]
    docs = []
    for line in lines:
        try:
            doc = json.loads(line)
        except ValueError:
            raise AssertionError(f"not a JSON line: {line!r}") from None
        assert isinstance(doc, dict), line
        docs.append(doc)
    return docs


def test_json_log_lines(json_operator: Operator, sgc: Objects, namespace: str,
                        controlplane: ControlPlane) -> None:
    sgc.create(namespace, sample("valid"))
    sgc.create(namespace, sample("invalid", schedule="61 * * * *"))
    valid = ready(sgc, namespace, "valid")
    invalid = ready(sgc, namespace, "invalid", reason="InvalidSpec")
    for i in range(3):  # changes (label edits, a spec edit, a run-now): many watch events
        sgc.patch(namespace, "valid", {"metadata": {"labels": {"round": str(i)}}})
    sgc.patch(namespace, "valid", {"spec": {"schedule": "7 * * * *"}})
    sgc.patch(namespace, "valid", {"metadata": {"annotations": {
        "gcpcall.dev/run-requested-at": "2030-01-01T00:00:00Z"}}})
    ready(sgc, namespace, "valid")
    time.sleep(4)  # a drift check (3 s in tests) and the events' posts
    uids = {"valid": valid["metadata"]["uid"], "invalid": invalid["metadata"]["uid"]}

    docs = wait_for(lambda: (d := parsed(json_operator)) and len(d) > 3 and d,
                    what="log lines")
    for doc in docs:
        assert {"time", "level", "logger", "message"} <= set(doc), doc
        assert doc["level"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), doc

    # kopf's own lines about each object carry it
    for name, uid in uids.items():
        about = [d for d in docs if d.get("uid") == uid]
        assert about, f"no line carries {name}'s uid"
        for doc in about:
            assert (doc["namespace"], doc["name"]) == (namespace, name), doc
    # and any line whose text names one of them carries it too
    for doc in docs:
        for name, uid in uids.items():
            if f"{namespace}/{name}" in doc["message"]:
                assert (doc.get("namespace"), doc.get("name"), doc.get("uid")) == (
                    namespace, name, uid), doc

    # no INFO line per watch event: the routine handler's successes are DEBUG
    assert not [d for d in docs if d["level"] == "INFO" and "watch_events" in d["message"]]
    # kopf's two INFO lines per change made (handler succeeded, change processed); the
    # status writes, the sync's reads and the event posts in between add none
    changes = 6
    info_about_valid = [d for d in docs if d["level"] == "INFO" and d.get("uid") == uids["valid"]]
    assert len(info_about_valid) <= 2 * changes, info_about_valid

    # the unknown variable is one warning line
    unknown = [d for d in docs if "GCPCALL_UNKNOWN_KNOB" in d["message"]]
    assert [d["level"] for d in unknown] == ["WARNING"]

    text = json_operator.log()
    assert "ya29." not in text
    assert "eyJ" not in text
    assert controlplane.token not in text
