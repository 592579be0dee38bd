"""The Cloud Build part of the Google APIs simulator: a google.longrunning Operation API.

Why: a ScheduledGcpCall that runs a build trigger gets back a google.longrunning
Operation (`{name, metadata, done?, response | error}`), the other family of LROs the
relay must follow (besides Compute's). Cloud Build's `projects.triggers.run` is the
smallest real API that returns one and is polled with `GET /v1/{operation name}`.

Checked against the Cloud Build v1 REST reference (cloud.google.com/build/docs/api/
reference/rest/v1, read through the search corpus) and captured responses:
- projects.triggers.run: POST https://cloudbuild.googleapis.com/v1/projects/{projectId}/
  triggers/{triggerId}:run, body a RepoSource; "The POST request that does not include the
  location endpoint in the path can only be used when running global triggers".
  projects.locations.triggers.run: POST .../v1/{name=projects/*/locations/*/triggers/*}:run,
  body {projectId, triggerId, source}. Both answer an Operation.
- The Operation (captured responses, e.g. google/hashr's Cloud Build test fixtures and
  the Compute image-import docs): {"name": "operations/build/PROJECT/OPERATION_ID",
  "metadata": {"@type": "type.googleapis.com/google.devtools.cloudbuild.v1.
  BuildOperationMetadata", "build": {"id", "status": "QUEUED", "createTime", ...}}} while
  running - `done` is absent (proto3 JSON leaves out a false boolean) - and later
  {"done": true, "metadata": {...}, "response": {"@type": "type.googleapis.com/
  google.devtools.cloudbuild.v1.Build", ...}} with build status SUCCESS. OPERATION_ID is
  the base64 of the build id (the captured "MjE1ZDgx..." decodes to "215d81...").
- A failed build: done with `error` (google.rpc.Status); clients report its message,
  "Build failed; check build logs for details" (the default message here).
- operations.get: GET https://cloudbuild.googleapis.com/v1/{name=operations/**}; builds.get.

Guesses: the regional operation name "projects/P/locations/L/operations/ID"; the failed
operation's code (2, UNKNOWN); the 404 wording for an undeclared trigger ("Requested entity
was not found.", the generic google.rpc NOT_FOUND text). Build status goes QUEUED (the
run's answer) -> WORKING (later reads) -> SUCCESS | FAILURE.

Triggers must be declared first (`declare_trigger`, via the admin routes).
"""

from __future__ import annotations

import base64
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gcpcall.emulator.core import Clock
from gcpcall.emulator.googleapis_base import (
    ApiCall,
    ApiError,
    Behavior,
    JsonObject,
    LongRunning,
    Router,
    rfc3339,
    rpc_error,
    string_field,
)
from gcpcall.emulator.iam import CLOUD_PLATFORM

__all__ = ["CLOUDBUILD_HOST", "Build", "BuildTrigger", "CloudBuildApi"]

CLOUDBUILD_HOST = "cloudbuild.googleapis.com"
_TYPES = "type.googleapis.com/google.devtools.cloudbuild.v1"
DEFAULT_FAILURE = "Build failed; check build logs for details"
_FAILED_CODE = 2  # google.rpc.Code.UNKNOWN
_MAX_BUILDS = 10_000


@dataclass
class BuildTrigger:
    """A declared build trigger and how its builds end."""

    project: str
    location: str  # "global" for global triggers
    trigger: str  # the id (or name) used in the run URL
    behavior: Behavior
    substitutions: dict[str, str] = field(default_factory=dict)
    id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def admin_json(self) -> JsonObject:
        return {
            "project": self.project,
            "location": self.location,
            "trigger": self.trigger,
            "id": self.id,
            "substitutions": dict(self.substitutions),
            **self.behavior.to_json(),
        }


@dataclass
class Build:
    """One build started by a trigger run, with its google.longrunning Operation."""

    trigger: BuildTrigger
    progress: LongRunning
    source: JsonObject | None
    id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def operation_name(self) -> str:
        op_id = base64.b64encode(self.id.encode()).decode("ascii")
        if self.trigger.location == "global":
            return f"operations/build/{self.trigger.project}/{op_id}"
        return (
            f"projects/{self.trigger.project}/locations/{self.trigger.location}/operations/{op_id}"
        )

    def build_json(self, now: float, *, initial: bool = False) -> JsonObject:
        """The Build resource at `now` (`initial`: as the run's answer shows it)."""
        trigger, progress = self.trigger, self.progress
        done = progress.done(now)
        if done:
            status = "FAILURE" if progress.failed else "SUCCESS"
        else:
            status = "QUEUED" if initial else "WORKING"
        doc: JsonObject = {
            "name": f"projects/{trigger.project}/locations/{trigger.location}/builds/{self.id}",
            "id": self.id,
            "status": status,
        }
        if self.source:
            doc["source"] = self.source
        doc["createTime"] = rfc3339(progress.created, digits=6, zulu=True)
        if status != "QUEUED":
            doc["startTime"] = rfc3339(progress.created, digits=6, zulu=True)
        if done and progress.done_at is not None:
            doc["finishTime"] = rfc3339(progress.done_at, digits=6, zulu=True)
        doc["timeout"] = "600s"
        doc["projectId"] = trigger.project
        doc["logUrl"] = (
            f"https://console.cloud.google.com/cloud-build/builds;region={trigger.location}/"
            f"{self.id}?project={trigger.project}"
        )
        if trigger.substitutions:
            doc["substitutions"] = dict(trigger.substitutions)
        doc["buildTriggerId"] = trigger.id
        doc["queueTtl"] = "3600s"
        if done and progress.behavior.fail is not None:
            doc["statusDetail"] = progress.behavior.fail
            doc["failureInfo"] = {"type": "USER_BUILD_STEP", "detail": progress.behavior.fail}
        return doc

    def operation_json(self, now: float, *, initial: bool = False) -> JsonObject:
        """The google.longrunning Operation at `now`."""
        build = self.build_json(now, initial=initial)
        doc: JsonObject = {
            "name": self.operation_name,
            "metadata": {"@type": f"{_TYPES}.BuildOperationMetadata", "build": build},
        }
        if self.progress.done(now):
            doc["done"] = True
            if self.progress.behavior.fail is not None:
                doc["error"] = {"code": _FAILED_CODE, "message": self.progress.behavior.fail}
            else:
                doc["response"] = {"@type": f"{_TYPES}.Build", **build}
        return doc


class CloudBuildApi:
    """cloudbuild.googleapis.com: declared triggers, their builds and operations."""

    host = CLOUDBUILD_HOST
    scopes = frozenset({CLOUD_PLATFORM})

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.triggers: dict[tuple[str, str, str], BuildTrigger] = {}
        self.builds: OrderedDict[str, Build] = OrderedDict()  # by build id
        self._by_operation: dict[str, str] = {}  # operation name -> build id
        self.router = Router()
        r = self.router
        r.add(
            "POST",
            "/v1/projects/{project}/triggers/{trigger}:run",
            "cloudbuild.projects.triggers.run",
            self._run_global,
        )
        r.add(
            "POST",
            "/v1/projects/{project}/locations/{location}/triggers/{trigger}:run",
            "cloudbuild.projects.locations.triggers.run",
            self._run_located,
        )
        r.add(
            "GET",
            "/v1/operations/build/{project}/{operation}",
            "cloudbuild.operations.get",
            self._get_operation,
        )
        r.add(
            "GET",
            "/v1/projects/{project}/locations/{location}/operations/{operation}",
            "cloudbuild.projects.locations.operations.get",
            self._get_operation,
        )
        r.add(
            "GET",
            "/v1/projects/{project}/builds/{build}",
            "cloudbuild.projects.builds.get",
            self._get_build,
        )
        r.add(
            "GET",
            "/v1/projects/{project}/locations/{location}/builds/{build}",
            "cloudbuild.projects.locations.builds.get",
            self._get_build,
        )

    # -- declarations (admin) ------------------------------------------------------------

    def declare_trigger(self, doc: Mapping[str, Any]) -> BuildTrigger:
        """Declare a trigger: {"project", "location"?: "global", "trigger", behaviour keys,
        "substitutions"?: {...}}."""
        substitutions = doc.get("substitutions", {})
        if not isinstance(substitutions, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in substitutions.items()
        ):
            raise ValueError("substitutions must map strings to strings")
        trigger = BuildTrigger(
            project=string_field(doc, "project"),
            location=string_field(doc, "location", default="global"),
            trigger=string_field(doc, "trigger"),
            behavior=Behavior.from_json(doc, DEFAULT_FAILURE),
            substitutions=dict(substitutions),
        )
        self.triggers[(trigger.project, trigger.location, trigger.trigger)] = trigger
        return trigger

    def forget_trigger(self, doc: Mapping[str, Any]) -> bool:
        key = (
            string_field(doc, "project"),
            string_field(doc, "location", default="global"),
            string_field(doc, "trigger"),
        )
        return self.triggers.pop(key, None) is not None

    def reset(self) -> None:
        self.triggers.clear()
        self.builds.clear()
        self._by_operation.clear()

    def declarations(self) -> JsonObject:
        return {"triggers": [t.admin_json() for t in self.triggers.values()]}

    def operations_json(self) -> list[JsonObject]:
        now = self._clock.timestamp()
        return [
            {**build.operation_json(now), "polls": build.progress.polls}
            for build in self.builds.values()
        ]

    # -- the API -------------------------------------------------------------------------

    async def _run_global(self, call: ApiCall, params: Mapping[str, str]) -> JsonObject:
        source = call.json_object(required=False) or None
        return self._run(call, params["project"], "global", params["trigger"], source)

    async def _run_located(self, call: ApiCall, params: Mapping[str, str]) -> JsonObject:
        body = call.json_object(required=False)
        source = body.get("source")
        if source is not None and not isinstance(source, dict):
            raise rpc_error(400, "INVALID_ARGUMENT", "source must be a RepoSource object")
        return self._run(call, params["project"], params["location"], params["trigger"], source)

    def _run(
        self,
        call: ApiCall,
        project: str,
        location: str,
        trigger_id: str,
        source: JsonObject | None,
    ) -> JsonObject:
        trigger = self.triggers.get((project, location, trigger_id))
        if trigger is None:
            raise _not_found()
        build = Build(trigger, LongRunning(trigger.behavior, self._clock.timestamp()), source)
        self.builds[build.id] = build
        self._by_operation[build.operation_name] = build.id
        while len(self.builds) > _MAX_BUILDS:
            _, old = self.builds.popitem(last=False)
            self._by_operation.pop(old.operation_name, None)
        return build.operation_json(self._clock.timestamp(), initial=True)

    async def _get_operation(self, call: ApiCall, params: Mapping[str, str]) -> JsonObject:
        name = call.path.removeprefix("/v1/")
        build = self.builds.get(self._by_operation.get(name, ""))
        if build is None:
            raise _not_found()
        now = self._clock.timestamp()
        build.progress.poll(now)
        return build.operation_json(now)

    async def _get_build(self, call: ApiCall, params: Mapping[str, str]) -> JsonObject:
        build = self.builds.get(params["build"])
        if build is None or build.trigger.project != params["project"]:
            raise _not_found()
        return build.build_json(self._clock.timestamp())


def _not_found() -> ApiError:
    return rpc_error(404, "NOT_FOUND", "Requested entity was not found.")
