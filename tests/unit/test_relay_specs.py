"""The relay parses an object's spec once per generation, and again whenever it could differ."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from gcpcall.api.errors import InvalidSpec
from gcpcall.api.gcp_task import GcpTaskSpec
from gcpcall.api.scheduled_call import ScheduledCallSpec
from gcpcall.kube import ObjectRef
from gcpcall.reconcile.objects import ObjectView
from gcpcall.relay.specs import ParsedSpecs
from tests.unit._specs import DEFAULTS, call_spec, task_spec


def _view(spec: dict[str, Any], generation: int = 1, uid: str = "uid-a",
          kind: str = "ScheduledGcpCall") -> ObjectView:
    plural = "scheduledgcpcalls" if kind == "ScheduledGcpCall" else "gcptasks"
    return ObjectView(ObjectRef(kind, plural, "ns", "a", uid), generation, spec, {}, {})


def test_one_generation_is_parsed_once() -> None:
    specs = ParsedSpecs()
    first = specs.parse(_view(call_spec()), DEFAULTS)
    assert isinstance(first, ScheduledCallSpec)
    assert specs.parse(_view(call_spec()), DEFAULTS) is first
    assert isinstance(specs.parse(_view(task_spec(), uid="uid-t", kind="GcpTask"), DEFAULTS),
                      GcpTaskSpec)


def test_a_new_generation_or_other_defaults_parse_again() -> None:
    specs = ParsedSpecs()
    first = specs.parse(_view(call_spec()), DEFAULTS)
    edited = specs.parse(_view(call_spec(schedule="7 * * * *"), generation=2), DEFAULTS)
    assert edited is not first
    assert isinstance(edited, ScheduledCallSpec)
    assert edited.schedule == "7 * * * *"
    annotated = dataclasses.replace(DEFAULTS, namespace_annotations={"x": "y"})
    assert specs.parse(_view(call_spec(schedule="7 * * * *"), generation=2),
                       annotated) is not edited
    # no generation (not from the API server): never reused
    assert specs.parse(_view(call_spec(), generation=0), DEFAULTS) is not specs.parse(
        _view(call_spec(), generation=0), DEFAULTS)


def test_an_invalid_spec_is_refused_every_time_and_kept_nowhere() -> None:
    specs = ParsedSpecs()
    bad = call_spec(schedule="not a schedule")
    for _ in range(2):
        with pytest.raises(InvalidSpec) as refused:
            specs.parse(_view(bad), DEFAULTS)
        assert refused.value.field == "spec.schedule"
    assert len(specs) == 0


def test_the_oldest_entry_goes_when_the_bound_is_reached() -> None:
    specs = ParsedSpecs(limit=2)
    a = specs.parse(_view(call_spec(), uid="a"), DEFAULTS)
    specs.parse(_view(call_spec(), uid="b"), DEFAULTS)
    specs.parse(_view(call_spec(), uid="c"), DEFAULTS)
    assert len(specs) == 2
    assert specs.parse(_view(call_spec(), uid="a"), DEFAULTS) is not a
