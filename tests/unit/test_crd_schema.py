"""Static checks of the CRD YAML in crds/: the conventions no API server test would catch.

Why: the API server accepts a schema without descriptions, with `default:` values, or with
two copies of the shared `target` block drifting apart; users would then see empty
`kubectl explain` pages, Argo CD a permanent diff, and the two kinds different rules for the
same field. These checks keep the conventions of api.md and ecosystem.md true as the
schemas grow.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

CRDS = Path(__file__).resolve().parents[2] / "crds"
FILES = {
    "ScheduledGcpCall": CRDS / "scheduledgcpcalls.gcpcall.dev.yaml",
    "GcpTask": CRDS / "gcptasks.gcpcall.dev.yaml",
}

Schema = dict[str, Any]


def load(kind: str) -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(FILES[kind].read_text()) if d]
    assert len(docs) == 1
    crd: dict[str, Any] = docs[0]
    return crd


def root_schema(kind: str) -> Schema:
    [version] = load(kind)["spec"]["versions"]
    schema: Schema = version["schema"]["openAPIV3Schema"]
    return schema


def walk(schema: Schema, path: str = "") -> Iterator[tuple[str, Schema]]:
    """Every schema node with its path (`spec.target.headers[].name`)."""
    yield path, schema
    for name, child in schema.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}" if path else name)
    if "items" in schema:
        yield from walk(schema["items"], f"{path}[]")


def node(schema: Schema, path: str) -> Schema:
    for part in path.split("."):
        schema = schema["properties"][part]
    return schema


KINDS = list(FILES)


@pytest.mark.parametrize("kind", KINDS)
def test_names_scope_and_version(kind: str) -> None:
    crd = load(kind)
    plural = {"ScheduledGcpCall": "scheduledgcpcalls", "GcpTask": "gcptasks"}[kind]
    short = {"ScheduledGcpCall": "sgc", "GcpTask": "gtask"}[kind]

    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == f"{plural}.gcpcall.dev"
    assert crd["spec"]["group"] == "gcpcall.dev"
    assert crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"]["kind"] == kind
    assert crd["spec"]["names"]["plural"] == plural
    assert crd["spec"]["names"]["shortNames"] == [short]
    assert crd["spec"]["names"]["categories"] == ["gcp", "gcpcall"]
    [version] = crd["spec"]["versions"]
    assert version["name"] == "v1alpha1"
    assert version["served"] is True
    assert version["storage"] is True
    assert version["subresources"] == {"status": {}}


@pytest.mark.parametrize("kind", KINDS)
def test_no_default_values_anywhere(kind: str) -> None:
    # Argo CD would show an object with a schema default as permanently out of sync.
    defaults = [path for path, schema in walk(root_schema(kind)) if "default" in schema]

    assert defaults == []


@pytest.mark.parametrize("kind", KINDS)
def test_every_property_has_a_description(kind: str) -> None:
    # `metadata` is described by the server's ObjectMeta; everything else is ours.
    missing = [
        path
        for path, schema in walk(root_schema(kind))
        if path != "metadata" and not str(schema.get("description", "")).strip()
    ]

    assert missing == []


@pytest.mark.parametrize("kind", KINDS)
def test_free_form_json_only_where_a_json_value_is_the_point(kind: str) -> None:
    allowed = {
        "spec.target.body.json",
        "status.operation.response",
        "status.lastRun.operation.response",
        "status.runs[].operation.response",
    }

    free_form = {
        path
        for path, schema in walk(root_schema(kind))
        if schema.get("x-kubernetes-preserve-unknown-fields")
    }

    assert free_form
    assert free_form <= allowed


@pytest.mark.parametrize("kind", KINDS)
def test_every_string_and_list_is_bounded(kind: str) -> None:
    # CEL's cost estimate needs the bounds, and they keep objects far from etcd's limit.
    unbounded = [
        path
        for path, schema in walk(root_schema(kind))
        if path.startswith(("spec", "status"))
        and (
            (schema.get("type") == "string" and not {"maxLength", "enum", "format"} & schema.keys())
            or (schema.get("type") == "array" and "maxItems" not in schema)
        )
    ]

    assert unbounded == []


@pytest.mark.parametrize("kind", KINDS)
def test_every_cel_rule_has_a_message_naming_its_field(kind: str) -> None:
    rules = [
        (path, rule)
        for path, schema in walk(root_schema(kind))
        for rule in schema.get("x-kubernetes-validations", [])
    ]

    assert rules
    for path, rule in rules:
        named = (rule.get("fieldPath") or path).split(".")[-1].removesuffix("[]")
        assert named in rule["message"], (path, rule)
        assert "fieldPath" not in rule or rule["fieldPath"].startswith("."), (path, rule)


SHARED = [
    "project",
    "location",
    "serviceAccountName",
    "target",
    "delivery",
    "operation",
    "deletionPolicy",
]


def without_descriptions(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: without_descriptions(v) for k, v in schema.items() if k != "description"}
    return schema


@pytest.mark.parametrize("field", SHARED)
def test_shared_spec_fields_are_identical_in_both_kinds(field: str) -> None:
    # One contract for the same field: a rule added to one kind must reach the other.
    sgc = node(root_schema("ScheduledGcpCall"), f"spec.{field}")
    task = node(root_schema("GcpTask"), f"spec.{field}")

    if field in {"target", "serviceAccountName"}:
        assert sgc == task  # word for word, descriptions included
    else:
        # Their descriptions name each kind's own Google service; the rules must agree.
        assert without_descriptions(sgc) == without_descriptions(task)


def test_shared_status_shapes_are_identical_in_both_kinds() -> None:
    sgc = root_schema("ScheduledGcpCall")
    task = root_schema("GcpTask")

    assert without_descriptions(node(sgc, "status.conditions")["items"]) == (
        without_descriptions(node(task, "status.conditions")["items"])
    )
    assert node(sgc, "status.identity") == node(task, "status.identity")
    assert node(sgc, "status.lastRun.operation") == node(task, "status.operation")
    assert node(sgc, "status.lastRun") | {"description": ""} == (
        node(sgc, "status.runs")["items"] | {"description": ""}
    )


def columns(kind: str) -> list[tuple[str, str, int, str]]:
    [version] = load(kind)["spec"]["versions"]
    return [
        (c["name"], c["type"], c.get("priority", 0), c["jsonPath"])
        for c in version["additionalPrinterColumns"]
    ]


def test_scheduledgcpcall_printer_columns_are_those_of_api_md() -> None:
    ready = '.status.conditions[?(@.type=="Ready")]'
    last_run = '.status.conditions[?(@.type=="LastRunSucceeded")]'

    assert columns("ScheduledGcpCall") == [
        ("Schedule", "string", 0, ".spec.schedule"),
        ("Ready", "string", 0, f"{ready}.status"),
        ("Status", "string", 0, f"{ready}.reason"),
        ("Last-Run", "date", 0, ".status.lastRun.attemptTime"),
        ("Result", "string", 0, f"{last_run}.reason"),
        ("Next-Run", "string", 1, ".status.nextRunTime"),
        ("Age", "date", 0, ".metadata.creationTimestamp"),
    ]


def test_gcptask_printer_columns_are_those_of_api_md() -> None:
    assert columns("GcpTask") == [
        ("Queue", "string", 0, ".spec.queue"),
        ("Phase", "string", 0, ".status.phase"),
        ("Attempts", "integer", 0, ".status.dispatchCount"),
        ("Result", "string", 0, '.status.conditions[?(@.type=="Succeeded")].reason'),
        ("Age", "date", 0, ".metadata.creationTimestamp"),
    ]


def test_every_printer_column_points_at_a_field_of_the_schema() -> None:
    for kind in KINDS:
        paths = {path for path, _ in walk(root_schema(kind))}
        for name, _, _, json_path in columns(kind):
            field = json_path.lstrip(".").split("[")[0]
            if field != "metadata.creationTimestamp":
                assert field in paths, (kind, name, json_path)


def test_enums_of_api_md() -> None:
    for kind in KINDS:
        spec = root_schema(kind)
        assert node(spec, "spec.target.method")["enum"] == [
            "GET",
            "POST",
            "PUT",
            "PATCH",
            "DELETE",
            "HEAD",
            "OPTIONS",
        ]
        assert node(spec, "spec.delivery")["enum"] == ["Direct", "Relay"]
        assert node(spec, "spec.deletionPolicy")["enum"] == ["Delete", "Abandon"]
    assert node(root_schema("GcpTask"), "status.phase")["enum"] == [
        "Pending",
        "Queued",
        "Running",
        "Succeeded",
        "Failed",
        "Unknown",
    ]
