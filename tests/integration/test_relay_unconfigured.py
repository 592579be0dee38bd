"""Relay objects on an operator without a relay URL: refused with the reason, and the
operator runs on (Direct objects need no relay)."""

from __future__ import annotations

import pytest
from tests.integration.conftest import Emulator, Objects, condition, wait_for
from tests.integration.test_gcptask_lifecycle import make_queue
from tests.integration.test_gcptask_lifecycle import sample as task_sample
from tests.integration.test_relay import relayed
from tests.integration.test_scheduled_lifecycle import ready

pytestmark = pytest.mark.usefixtures("operator")


def test_relay_objects_without_a_relay_url_are_refused_with_the_reason(
    sgc: Objects, gtask: Objects, namespace: str, emulator: Emulator
) -> None:
    """The session's operator has no relay URL: it runs on, and says why on the object."""
    sgc.create(namespace, relayed("no-relay", "/x"))
    obj = ready(sgc, namespace, "no-relay", "RelayNotConfigured")
    assert "GCPCALL_RELAY_URL" in condition(obj, "Ready")["message"]
    assert "jobName" not in obj["status"]
    make_queue(emulator, namespace)
    gtask.create(namespace, task_sample("no-relay", namespace, "/x", delivery="Relay"))
    task = wait_for(lambda: (o := gtask.get(namespace, "no-relay")) and
                    condition(o, "Ready").get("reason") == "RelayNotConfigured" and o,
                    what="RelayNotConfigured")
    assert task["status"]["phase"] == "Pending"
