"""Valid spec dictionaries to mutate in tests, and the Defaults they parse with."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from gcpcall.api.placement import Defaults

NOW = datetime(2026, 11, 22, 9, 0, 0, tzinfo=UTC)
COMPUTE_URI = (
    "https://compute.googleapis.com/compute/v1/projects/my-project/zones/europe-west3-a/"
    "instanceGroupManagers/ig/resize?size=4"
)

DEFAULTS = Defaults(project="operator-project", location="us-central1", now=NOW)


def call_spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "schedule": "5 * * * *",
        "project": "my-project",
        "location": "europe-west3",
        "target": {
            "uri": COMPUTE_URI,
            "method": "POST",
            "headers": [{"name": "Content-Type", "value": "application/json"}],
            "body": {"json": {"b": 1, "a": [1, 2]}},
            "auth": {
                "oauth": {},
                "serviceAccountEmail": "runner@my-project.iam.gserviceaccount.com",
            },
        },
    }
    spec.update(copy.deepcopy(overrides))
    return spec


def task_spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "queue": "etl",
        "project": "my-project",
        "location": "europe-west3",
        "target": {"uri": "https://run.example.com/launch", "auth": {"oidc": {}}},
    }
    spec.update(copy.deepcopy(overrides))
    return spec


def with_target(spec: dict[str, Any], **target: Any) -> dict[str, Any]:
    """A copy of `spec` with target fields replaced (None removes a field)."""
    out = copy.deepcopy(spec)
    for key, value in target.items():
        if value is None:
            out["target"].pop(key, None)
        else:
            out["target"][key] = value
    return out
