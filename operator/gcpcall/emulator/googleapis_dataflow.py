"""The Dataflow part of the Google APIs simulator: template launches and their jobs.

Why: launching a Dataflow template is the operator's example of a call that must not run
twice - Dataflow refuses a second *active* job with the same name - and of a "long-running"
result that is a job, not an operation. A relay that retries a launch, or a payload that
does not make the job name unique per run, shows up here as HTTP 409.

Checked against the Dataflow v1b3 REST reference (cloud.google.com/dataflow/docs/reference/
rest/v1b3, read through the search corpus) and captured responses:
- projects.locations.templates.launch: POST https://dataflow.googleapis.com/v1b3/projects/
  {projectId}/locations/{location}/templates:launch, query `gcsPath` (or
  `dynamicTemplate.gcsPath`) and `validateOnly`, body LaunchTemplateParameters {jobName,
  parameters, environment, ...}; response LaunchTemplateResponse {job}.
- projects.locations.flexTemplates.launch: POST .../flexTemplates:launch, body
  {launchParameter: {jobName, containerSpecGcsPath, parameters, environment, ...},
  validateOnly}; response {job} - "The job that was launched, if the request was not a
  dry run".
- The launched job as captured in real answers (e.g. a curl launch of Word_Count):
  {"job": {"id": "2022-02-16_01_15_13-5260506404532792394", "projectId", "name", "type":
  "JOB_TYPE_BATCH", "currentStateTime": "1970-01-01T00:00:00Z", "createTime":
  "2022-02-16T09:15:13.997352Z", "location", "startTime"}} - no currentState yet (it is
  JOB_STATE_UNKNOWN, left out of the JSON); the id carries the creation time in US Pacific
  time. projects.locations.jobs.get returns the Job with currentState (here
  JOB_STATE_RUNNING, then JOB_STATE_DONE, or JOB_STATE_FAILED for a failing template).
- Job.name: "Only one active job with a given name can exist in a project within one region
  at any given time"; it "must match the regular expression [a-z]([-a-z0-9]{0,1022}
  [a-z0-9])?". A launch with the name of an active job answers (apache/beam#29441):
  409 {"code": 409, "errors": [{"domain": "global", "message": "(78f666ea16e50f79): There is
  already an active job named NAME. If you want to  submit a second job, try again by
  setting a different name.", "reason": "alreadyExists"}], "message": <the same>,
  "status": "ALREADY_EXISTS"} (the double space is Dataflow's). Once the job is done the
  name is free again.
- Finding a job by name: projects.locations.jobs.list has `filter` (UNKNOWN | ALL |
  TERMINATED | ACTIVE: "Filters the jobs that are running ordered on the creation
  timestamp") and an optional `name` ("Optional. The job name."), with pageSize/pageToken;
  response {jobs[], nextPageToken}. Both are served.

Guesses: the 400 wordings for an undeclared template ("Unable to open template file", as
Dataflow words it for a missing job file), a missing or malformed jobName, and the 404 of
jobs.get for an unknown id.

Templates must be declared first (`declare_template`, via the admin routes): the simulator
does not read Cloud Storage.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import zoneinfo
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
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
)
from gcpcall.emulator.iam import CLOUD_PLATFORM

__all__ = ["DATAFLOW_HOST", "DataflowApi", "DataflowJob", "DataflowTemplate"]

DATAFLOW_HOST = "dataflow.googleapis.com"
JOB_NAME = re.compile(r"[a-z]([-a-z0-9]{0,1022}[a-z0-9])?")
_DEFAULT_FAILURE = "The job failed (declared in the emulator)."
_KINDS = ("classic", "flex", "any")
_JOB_TYPES = ("JOB_TYPE_BATCH", "JOB_TYPE_STREAMING")
_PACIFIC = zoneinfo.ZoneInfo("America/Los_Angeles")
_MAX_JOBS = 10_000
_MAX_PAGE = 1000


@dataclass
class DataflowTemplate:
    """A declared template (classic gcsPath or flex containerSpecGcsPath)."""

    gcs_path: str
    kind: str  # "classic" | "flex" | "any"
    job_type: str
    behavior: Behavior
    # The launch is made at once, its answer sent this much later (real seconds): a test's
    # caller that gives up first has launched the job without seeing the answer.
    answer_delay_seconds: float = 0.0

    def admin_json(self) -> JsonObject:
        return {
            "gcs_path": self.gcs_path,
            "kind": self.kind,
            "job_type": self.job_type,
            "answer_delay_seconds": self.answer_delay_seconds,
            **self.behavior.to_json(),
        }


@dataclass
class DataflowJob:
    """A launched job; RUNNING until its template's behaviour ends it."""

    project: str
    location: str
    name: str
    template: DataflowTemplate
    progress: LongRunning
    parameters: dict[str, Any]
    id: str = ""
    launched_by: str | None = None

    def __post_init__(self) -> None:
        if not self.id:
            local = datetime.fromtimestamp(self.progress.created, _PACIFIC)
            self.id = f"{local:%Y-%m-%d_%H_%M_%S}-{secrets.randbelow(9 * 10**18) + 10**18}"

    def state(self, now: float) -> str:
        if not self.progress.done(now):
            return "JOB_STATE_RUNNING"
        return "JOB_STATE_FAILED" if self.progress.failed else "JOB_STATE_DONE"

    def active(self, now: float) -> bool:
        return self.state(now) == "JOB_STATE_RUNNING"

    def to_json(self, now: float, *, launched: bool = False) -> JsonObject:
        """The Job (summary view); `launched`: as the launch answers it."""
        created = rfc3339(self.progress.created, digits=6, zulu=True)
        doc: JsonObject = {
            "id": self.id,
            "projectId": self.project,
            "name": self.name,
            "type": self.template.job_type,
        }
        if launched:
            doc["currentStateTime"] = "1970-01-01T00:00:00Z"
        else:
            doc["currentState"] = self.state(now)
            changed = self.progress.done_at if self.progress.done(now) else None
            doc["currentStateTime"] = rfc3339(
                self.progress.created if changed is None else changed, digits=6, zulu=True
            )
        doc["createTime"] = created
        doc["location"] = self.location
        doc["startTime"] = created
        return doc

    def admin_json(self, now: float) -> JsonObject:
        return {
            **self.to_json(now),
            "template": self.template.gcs_path,
            "parameters": dict(self.parameters),
            "launched_by": self.launched_by,
            "polls": self.progress.polls,
        }


@dataclass
class _Launch:
    project: str
    location: str
    gcs_path: str
    kind: str
    job_name: Any
    parameters: Any
    validate_only: bool = False


class DataflowApi:
    """dataflow.googleapis.com: declared templates and the jobs launched from them."""

    host = DATAFLOW_HOST
    scopes = frozenset({CLOUD_PLATFORM, "https://www.googleapis.com/auth/compute"})

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.templates: dict[str, DataflowTemplate] = {}
        self.jobs: OrderedDict[str, DataflowJob] = OrderedDict()
        self.router = Router()
        located = "/v1b3/projects/{project}/locations/{location}"
        r = self.router
        r.add(
            "POST",
            f"{located}/templates:launch",
            "dataflow.projects.locations.templates.launch",
            self._launch_classic,
        )
        r.add(
            "POST",
            f"{located}/flexTemplates:launch",
            "dataflow.projects.locations.flexTemplates.launch",
            self._launch_flex,
        )
        r.add(
            "GET", f"{located}/jobs/{{job}}", "dataflow.projects.locations.jobs.get", self._get_job
        )
        r.add("GET", f"{located}/jobs", "dataflow.projects.locations.jobs.list", self._list_jobs)

    # -- declarations (admin) ------------------------------------------------------------

    def declare_template(self, doc: Mapping[str, Any]) -> DataflowTemplate:
        """Declare a template: {"gcs_path": "gs://...", "kind"?: "classic" | "flex" | "any",
        "job_type"?: "JOB_TYPE_BATCH" | "JOB_TYPE_STREAMING", behaviour keys}."""
        path = doc.get("gcs_path")
        if not isinstance(path, str) or not path.startswith("gs://"):
            raise ValueError("gcs_path must be a gs:// path")
        kind = doc.get("kind", "any")
        if kind not in _KINDS:
            raise ValueError(f"kind must be one of {', '.join(_KINDS)}")
        job_type = doc.get("job_type", "JOB_TYPE_BATCH")
        if job_type not in _JOB_TYPES:
            raise ValueError(f"job_type must be one of {', '.join(_JOB_TYPES)}")
        delay = doc.get("answer_delay_seconds", 0.0)
        if not isinstance(delay, int | float) or isinstance(delay, bool) or not 0 <= delay <= 60:
            raise ValueError("answer_delay_seconds must be a number of seconds from 0 to 60")
        template = DataflowTemplate(path, kind, job_type, Behavior.from_json(doc, _DEFAULT_FAILURE),
                                    float(delay))
        self.templates[path] = template
        return template

    def forget_template(self, doc: Mapping[str, Any]) -> bool:
        return self.templates.pop(str(doc.get("gcs_path", "")), None) is not None

    def reset(self) -> None:
        self.templates.clear()
        self.jobs.clear()

    def declarations(self) -> JsonObject:
        return {"templates": [t.admin_json() for t in self.templates.values()]}

    def jobs_json(self) -> list[JsonObject]:
        now = self._clock.timestamp()
        return [job.admin_json(now) for job in self.jobs.values()]

    # -- the API -------------------------------------------------------------------------

    async def _launch_classic(self, call: ApiCall, params: Mapping[str, str]) -> JsonObject:
        body = call.json_object(required=False)
        path = call.query.get("gcsPath") or call.query.get("dynamicTemplate.gcsPath") or ""
        launch = _Launch(
            project=params["project"],
            location=params["location"],
            gcs_path=path,
            kind="classic",
            job_name=body.get("jobName"),
            parameters=body.get("parameters", {}),
            validate_only=call.query.get("validateOnly", "").lower() == "true",
        )
        return await self._answer(self._launch(call, launch), launch.gcs_path)

    async def _answer(self, answer: JsonObject, gcs_path: str) -> JsonObject:
        template = self.templates.get(gcs_path)
        if template is not None and template.answer_delay_seconds:
            await asyncio.sleep(template.answer_delay_seconds)
        return answer

    async def _launch_flex(self, call: ApiCall, params: Mapping[str, str]) -> JsonObject:
        body = call.json_object()
        parameter = body.get("launchParameter")
        if not isinstance(parameter, dict):
            raise _invalid("launchParameter is required.")
        launch = _Launch(
            project=params["project"],
            location=params["location"],
            gcs_path=str(parameter.get("containerSpecGcsPath") or ""),
            kind="flex",
            job_name=parameter.get("jobName"),
            parameters=parameter.get("parameters", {}),
            validate_only=body.get("validateOnly") is True,
        )
        return await self._answer(self._launch(call, launch), launch.gcs_path)

    def _launch(self, call: ApiCall, launch: _Launch) -> JsonObject:
        if not launch.gcs_path:
            raise _invalid("A template file location (gcsPath) is required.")
        template = self.templates.get(launch.gcs_path)
        if template is None or template.kind not in ("any", launch.kind):
            raise _invalid(f"Unable to open template file: {launch.gcs_path}.")
        name = launch.job_name
        if not isinstance(name, str) or not name:
            raise _invalid("The job name (jobName) is required.")
        if JOB_NAME.fullmatch(name) is None:
            raise _invalid(
                f"Invalid job name '{name}': the name must match the regular expression "
                "[a-z]([-a-z0-9]{0,1022}[a-z0-9])?"
            )
        if not isinstance(launch.parameters, dict):
            raise _invalid("parameters must be a map of strings.")
        now = self._clock.timestamp()
        for job in self.jobs.values():
            same = (job.project, job.location, job.name) == (launch.project, launch.location, name)
            if same and job.active(now):
                raise rpc_error(
                    409,
                    "ALREADY_EXISTS",
                    f"({_error_id()}): There is already an active job named {name}. If you "
                    "want to  submit a second job, try again by setting a different name.",
                    reason="alreadyExists",
                )
        if launch.validate_only:
            return {}
        job = DataflowJob(
            project=launch.project,
            location=launch.location,
            name=name,
            template=template,
            progress=LongRunning(template.behavior, now),
            parameters=dict(launch.parameters),
            launched_by=call.email,
        )
        self.jobs[job.id] = job
        while len(self.jobs) > _MAX_JOBS:
            self.jobs.popitem(last=False)
        return {"job": job.to_json(now, launched=True)}

    async def _get_job(self, call: ApiCall, params: Mapping[str, str]) -> JsonObject:
        job = self.jobs.get(params["job"])
        if job is None or (job.project, job.location) != (params["project"], params["location"]):
            raise rpc_error(
                404,
                "NOT_FOUND",
                f"({_error_id()}): Information about job {params['job']} could not be found "
                "in our system. Please double check the id is correct. If it is please "
                "contact customer support.",
            )
        now = self._clock.timestamp()
        job.progress.poll(now)
        return job.to_json(now)

    async def _list_jobs(self, call: ApiCall, params: Mapping[str, str]) -> JsonObject:
        now = self._clock.timestamp()
        wanted = call.query.get("filter", "UNKNOWN")
        if wanted not in ("UNKNOWN", "ALL", "TERMINATED", "ACTIVE"):
            raise rpc_error(
                400, "INVALID_ARGUMENT", f"Invalid value at 'filter' (Filter), \"{wanted}\""
            )
        name = call.query.get("name")
        jobs = [
            job
            for job in self.jobs.values()
            if (job.project, job.location) == (params["project"], params["location"])
            and (name is None or job.name == name)
        ]
        active = sorted((j for j in jobs if j.active(now)), key=lambda j: j.progress.created)
        ended = sorted(
            (j for j in jobs if not j.active(now)), key=lambda j: j.progress.done_at or 0.0
        )
        chosen = {
            "ACTIVE": active,
            "TERMINATED": ended,
            "ALL": active + ended,
            "UNKNOWN": sorted(jobs, key=lambda j: j.progress.created, reverse=True),
        }[wanted]
        size = _page_size(call.query.get("pageSize"))
        start = _page_start(call.query.get("pageToken"))
        page = chosen[start : start + size]
        doc: JsonObject = {}
        if page:
            doc["jobs"] = [job.to_json(now) for job in page]
        if start + size < len(chosen):
            doc["nextPageToken"] = str(start + size)
        return doc


def _error_id() -> str:
    return secrets.token_hex(8)


def _invalid(message: str) -> ApiError:
    return rpc_error(400, "INVALID_ARGUMENT", f"({_error_id()}): {message}")


def _page_size(text: str | None) -> int:
    try:
        size = int(text) if text else _MAX_PAGE
    except ValueError:
        size = _MAX_PAGE
    return max(1, min(size, _MAX_PAGE))


def _page_start(token: str | None) -> int:
    if not token:
        return 0
    if not token.isdigit():
        raise rpc_error(400, "INVALID_ARGUMENT", "Invalid page token.")
    return int(token)
