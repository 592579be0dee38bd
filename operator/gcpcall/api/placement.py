"""Where an object lands in Google Cloud, and the defaults that decide it.

Why a module: `project` and `location` come, in order, from the spec, the namespace's
annotations and the operator's settings (api.md, "Defaults"). The resolution is a pure
function of those three inputs so that it is tested once and every kind resolves alike;
the caller fetches the namespace annotations, this module never does I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gcpcall.api._fields import child, opt_str
from gcpcall.api.errors import InvalidSpec

__all__ = [
    "LOCATION_ANNOTATION",
    "PROJECT_ANNOTATION",
    "Defaults",
    "Placement",
    "check_location",
    "check_project",
    "placement_from_spec",
    "resolve_placement",
    "resolve_service_account_name",
]

PROJECT_ANNOTATION = "gcpcall.dev/project"
LOCATION_ANNOTATION = "gcpcall.dev/location"

# Google's project id rule (6-30 chars, a letter first), optionally domain-scoped
# (`example.com:my-project`), as Cloud Scheduler job names allow.
_PROJECT = re.compile(r"^(?:[a-z][-a-z0-9.]*[a-z0-9]:)?[a-z][-a-z0-9]{4,28}[a-z0-9]$")
_LOCATION = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")
_KSA = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@dataclass(frozen=True)
class Defaults:
    """Everything outside the spec that parsing needs; plain values, no clients.

    `project`/`location`/`service_account_name` are the operator's settings.
    `namespace_annotations` are the object's namespace's annotations.
    `allow_http` is true only against an emulator (`Endpoints.allow_http_targets`).
    `now` is the reference time for GcpTask's scheduleTime rules: pass the object's
    `metadata.creationTimestamp`, so that a spec valid at creation stays valid later.
    """

    project: str | None = None
    location: str | None = None
    service_account_name: str | None = None
    namespace_annotations: Mapping[str, str] = field(default_factory=dict)
    allow_http: bool = False
    now: datetime | None = None


@dataclass(frozen=True)
class Placement:
    project: str
    location: str


def check_project(project: str, field: str, origin: str = "") -> str:
    if not _PROJECT.match(project):
        raise InvalidSpec(field, f"{project!r}{origin} is not a Google Cloud project id "
                                 "(6-30 lowercase letters, digits or hyphens, a letter first)")
    return project


def check_location(location: str, field: str, origin: str = "") -> str:
    if len(location) > 63 or not _LOCATION.match(location):
        raise InvalidSpec(field, f"{location!r}{origin} is not a location id "
                                 "such as us-central1")
    return location


def _pick(
    spec_value: str | None, annotations: Mapping[str, str], annotation: str,
    setting: str | None,
) -> tuple[str | None, str]:
    if spec_value:
        return spec_value, ""
    from_namespace = (annotations.get(annotation) or "").strip()
    if from_namespace:
        return from_namespace, f" (from the namespace annotation {annotation})"
    if setting:
        return setting, " (from the operator's settings)"
    return None, ""


def resolve_placement(
    spec_project: str | None,
    spec_location: str | None,
    namespace_annotations: Mapping[str, str],
    settings_project: str | None,
    settings_location: str | None,
    *,
    path: str = "spec",
) -> Placement:
    """spec -> namespace annotation -> operator setting, each value validated.

    A missing or invalid value is `InvalidSpec` on `spec.project`/`spec.location`, the
    field the user can set to fix it, with the message saying where a bad value came from.
    """
    project, p_origin = _pick(spec_project, namespace_annotations, PROJECT_ANNOTATION,
                              settings_project)
    location, l_origin = _pick(spec_location, namespace_annotations, LOCATION_ANNOTATION,
                               settings_location)
    p_field, l_field = child(path, "project"), child(path, "location")
    if project is None:
        raise InvalidSpec(p_field, f"no project: set it, or the namespace annotation "
                                   f"{PROJECT_ANNOTATION}, or the operator's default project")
    if location is None:
        raise InvalidSpec(l_field, f"no location: set it, or the namespace annotation "
                                   f"{LOCATION_ANNOTATION}, or the operator's default location")
    return Placement(check_project(project, p_field, p_origin),
                     check_location(location, l_field, l_origin))


def resolve_service_account_name(
    spec: Mapping[str, Any], defaults: Defaults, path: str = "spec"
) -> str | None:
    """spec -> operator setting; None is not an error here (it is `IdentityNotReady`
    in the Workload Identity mode, and irrelevant in the Operator mode)."""
    name = opt_str(spec, "serviceAccountName", path) or defaults.service_account_name
    if name is not None and (len(name) > 253 or not _KSA.match(name)):
        raise InvalidSpec(child(path, "serviceAccountName"),
                          f"{name!r} is not a Kubernetes ServiceAccount name")
    return name


def placement_from_spec(spec: Mapping[str, Any], defaults: Defaults,
                        path: str = "spec") -> Placement:
    return resolve_placement(
        opt_str(spec, "project", path), opt_str(spec, "location", path),
        defaults.namespace_annotations, defaults.project, defaults.location, path=path,
    )
