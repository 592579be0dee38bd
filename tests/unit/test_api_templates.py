"""Per-run templates: what renders, what is refused (with the field and the line), and the
Direct rule (only the relay renders; other braces are data)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from gcpcall.api import templates
from gcpcall.api.errors import InvalidSpec
from gcpcall.api.scheduled_call import parse_scheduled_call
from gcpcall.api.templates import (
    RunContext,
    render,
    render_request,
    templated,
    uses_run_id,
)
from tests.unit._specs import DEFAULTS, call_spec

WHEN = datetime(2026, 11, 22, 2, 30, tzinfo=UTC)
NOW = datetime(2026, 11, 22, 2, 30, 7, tzinfo=UTC)
CTX = RunContext("3c38bb41-b264-57af-9744-4d55d9990dc9", WHEN, 2, "team-a", "nightly", NOW)


def relay_spec(**target: object) -> dict[str, object]:
    spec = call_spec(delivery="Relay")
    spec["target"] = {**spec["target"], **target}  # type: ignore[dict-item]
    return spec


def test_the_context_renders() -> None:
    assert render("wordcount-{{ run.id }}", CTX, "f") == \
        "wordcount-3c38bb41-b264-57af-9744-4d55d9990dc9"
    assert render("{{ run.scheduleTime }}/{{ run.attempt }}", CTX, "f") == \
        "2026-11-22T02:30:00Z/2"
    assert render("reports/{{ now | date('%Y%m%d') }}.csv", CTX, "f") == "reports/20261122.csv"
    assert render("{{ run.scheduleTime | date('%H%M') }}", CTX, "f") == "0230"
    assert render("{{ object.namespace }}/{{ object.name }}", CTX, "f") == "team-a/nightly"
    assert render("{{ '{{' }} literal", CTX, "f") == "{{ literal"
    assert render("no template here", CTX, "f") == "no template here"


BAD = {
    "syntax": "{{ run.id ",
    "unknown-name": "{{ secret }}",
    "unknown-field": "{{ run.token }}",
    "bare-run": "{{ run }}",
    "dunder": "{{ run.__class__ }}",
    "method-of-a-string": "{{ ''.join }}",
    "call": "{{ ''.join(['a']) }}",
    "huge-output": "{{ 'x' * 10**9 }}",
    "loop": "{% for i in range(1000000) %}x{% endfor %}",
    "include": "{% include 'other' %}",
    "set": "{% set x = 1 %}{{ x }}",
    "other-filter": "{{ run.id | upper }}",
    "date-with-kwargs": "{{ now | date(format='%Y') }}",
    "subscript": "{{ run['id'] }}",
    "globals": "{{ lipsum() }}",
    "macro": "{% macro m() %}x{% endmacro %}",
    "concatenation": "{{ run.id ~ run.id }}",
}


@pytest.mark.parametrize("source", list(BAD.values()), ids=list(BAD))
def test_anything_else_is_refused_naming_the_field(source: str) -> None:
    with pytest.raises(InvalidSpec) as refused:
        render(source, CTX, "spec.target.body.json.jobName")
    assert refused.value.field == "spec.target.body.json.jobName"
    assert "line 1" in refused.value.message


def test_at_least_twelve_refusals_are_covered() -> None:
    assert len(BAD) >= 12


def test_relay_specs_are_checked_when_parsed() -> None:
    good = relay_spec(body={"json": {"jobName": "wc-{{ run.id }}", "n": 3}})
    parse_scheduled_call(good, DEFAULTS)
    bad = relay_spec(body={"json": {"launch": {"jobName": "wc-{{ run.__class__ }}"}}})
    with pytest.raises(InvalidSpec) as refused:
        parse_scheduled_call(bad, DEFAULTS)
    assert refused.value.field == "spec.target.body.json.launch.jobName"
    header = relay_spec(headers=[{"name": "X-Run", "value": "{{ nope }}"}])
    with pytest.raises(InvalidSpec) as refused:
        parse_scheduled_call(header, DEFAULTS)
    assert refused.value.field == "spec.target.headers[0].value"


def test_a_template_may_not_move_the_call_to_another_host() -> None:
    moved = relay_spec(uri="https://{{ object.name }}.example.com/x", auth=None)
    with pytest.raises(InvalidSpec) as refused:
        parse_scheduled_call(moved, DEFAULTS)
    assert refused.value.field == "spec.target.uri"


def test_direct_refuses_the_context_and_keeps_other_braces_as_data() -> None:
    direct = call_spec(target={**call_spec()["target"],
                               "body": {"json": {"jobName": "wc-{{ run.id }}"}}})
    with pytest.raises(InvalidSpec) as refused:
        parse_scheduled_call(direct, DEFAULTS)
    assert refused.value.field == "spec.target.body.json.jobName"
    assert "only delivery: Relay renders" in refused.value.message
    data = call_spec(target={**call_spec()["target"],
                             "body": {"json": {"mustache": "{{ name }}", "x": "{%"}}})
    parsed = parse_scheduled_call(data, DEFAULTS)
    assert parsed.target.body is not None
    assert json.loads(parsed.target.body.data or b"") == {"mustache": "{{ name }}", "x": "{%"}


def test_a_request_is_rendered_and_recorded_without_secret_headers() -> None:
    spec = parse_scheduled_call(relay_spec(
        uri="https://dataflow.googleapis.com/v1b3/projects/p/locations/l/templates:launch"
            "?gcsPath=gs://t/{{ now | date('%Y') }}",
        headers=[{"name": "X-Run-Id", "value": "{{ run.id }}"},
                 {"name": "X-Api-Key", "value": "k-{{ run.attempt }}"}],
        body={"json": {"jobName": "wordcount-{{ run.id }}", "parameters": {"n": "1"}}}),
        DEFAULTS)
    assert spec.target.body is not None
    rendered = render_request(spec.target, lambda: CTX, spec.target.body.data)
    assert rendered.uri.endswith("gcsPath=gs://t/2026")
    assert rendered.headers == {"X-Run-Id": CTX.run_id, "X-Api-Key": "k-2"}
    assert json.loads(rendered.body or b"") == {"jobName": f"wordcount-{CTX.run_id}",
                                                "parameters": {"n": "1"}}
    record = rendered.record()
    assert record["uri"] == rendered.uri
    assert record["fields"] == {
        "spec.target.uri": rendered.uri,
        "spec.target.headers[0].value": CTX.run_id,
        "spec.target.body.json.jobName": f"wordcount-{CTX.run_id}",
    }
    assert rendered.run_id == CTX.run_id
    assert uses_run_id(rendered)


@pytest.mark.parametrize(("target", "expected"), [
    ({"headers": [{"name": "X-A", "value": "plain"}],
      "body": {"json": {"z": ["é", 1.5, None], "a": {"b": "c"}}}}, False),
    ({"body": {"text": "no template"}}, False),
    ({"uri": "https://compute.googleapis.com/compute/v1/x/{{ run.id }}"}, True),
    ({"headers": [{"name": "X-A", "value": "{{ run.attempt }}"}]}, True),
    ({"body": {"text": "{# a comment #}x"}}, True),
    ({"body": {"json": {"deep": [{"name": "job-{{ run.id }}"}]}}}, True),
])
def test_a_target_without_templates_is_sent_as_the_spec_states_it(
        target: dict[str, object], expected: bool) -> None:
    spec = parse_scheduled_call(relay_spec(**target), DEFAULTS)
    body = spec.target.body.data if spec.target.body is not None else None
    assert templated(spec.target) is expected
    made: list[RunContext] = []

    def context() -> RunContext:
        made.append(CTX)
        return CTX

    sent = render_request(spec.target, context, body)
    assert len(made) == (1 if expected else 0)  # a run context only where it is used
    if expected:
        assert sent.run_id == CTX.run_id
        assert sent.fields
        return
    # byte for byte what a rendering of the same target sends
    rendered = templates._render(spec.target, CTX, body, "spec.target", False)
    assert (sent.uri, sent.headers, sent.body, sent.fields) == (
        rendered.uri, rendered.headers, rendered.body, rendered.fields)
    assert sent.fields == {}
    assert sent.run_id is None
    assert not uses_run_id(sent)
