"""The Compute Engine part of the Google APIs simulator: MIG resize, Cloud Armor patchRule.

Why: the operator's examples call `instanceGroupManagers.resize` and
`securityPolicies.patchRule`, which answer at once with a `compute#operation` that only
later becomes DONE - possibly with an error. The relay follows that operation through its
`selfLink`; only a Compute that answers in the same shapes, finishes operations later and
can fail them shows that the relay reports the operation's outcome, not the HTTP 200.

Checked against Compute Engine v1 REST reference pages (cloud.google.com/compute/docs/
reference/rest/v1, read through the search corpus) and captured responses:
- instanceGroupManagers.resize: POST .../projects/{project}/zones/{zone}/
  instanceGroupManagers/{name}/resize, query `size` ("Number of instances that should
  exist") and `requestId`; response an Operation; "The resize operation is marked DONE
  when the resize actions are scheduled". regionInstanceGroupManagers.resize: the same
  under regions/{region}.
- securityPolicies.patchRule: POST .../projects/{project}/global/securityPolicies/
  {policy}/patchRule, query `priority`, `validateOnly`; body a SecurityPolicyRule;
  response an Operation. A priority without a rule answers 400 "Invalid value for field
  'priority': '0'. <policy> does not contain a rule at priority 0." (googleapis/
  python-compute#173).
- Operation: kind "compute#operation", id (uint64 as a string), name, zone/region (URLs,
  only for zonal/regional operations), clientOperationId (the requestId), operationType,
  targetLink, targetId, status PENDING | RUNNING | DONE, user, progress 0..100,
  insertTime/startTime/endTime (RFC 3339), error.errors[] {code, location?, message},
  httpErrorStatusCode + httpErrorMessage ("such as NOT FOUND") when it failed, selfLink.
  A captured MIG resize operation (kubernetes/autoscaler's GCE test fixtures) has
  operationType "compute.instanceGroupManagers.resize", a name like
  "operation-1505739408819-5597646964339-eb839c88-28805931" and times like
  "2017-09-18T05:56:49.227-07:00".
- zoneOperations / regionOperations / globalOperations: get (GET .../operations/{op}) and
  wait (POST .../operations/{op}/wait): "Waits for the specified Operation resource to
  return as DONE or for the request to approach the 2 minute deadline" - here it waits at
  most `SimulatorSettings.max_wait_seconds` of the emulator's clock (default 2 s).
- A missing resource: 404 {"error": {"code": 404, "message": "The resource 'projects/P/
  zones/Z/instanceGroupManagers/M' was not found", "errors": [{"message", "domain":
  "global", "reason": "notFound"}]}} (captured in GoogleCloudPlatform/magic-modules#4377).
- requestId: "Specify a unique request ID so that if you must retry your request, the
  server will know to ignore the request if it has already been completed"; it "must be a
  valid UUID with the exception that zero UUID is not supported". A repeated requestId on
  the same resource returns the first operation again.

Guesses (no reference found): the regional resize's operationType
"compute.regionInstanceGroupManagers.resize" (by analogy with the captured zonal one);
patchRule's operationType "patchRule"; the "Required field 'size' not specified" wording;
a failed operation's default error code/status (QUOTA_EXCEEDED, 403 FORBIDDEN; both set
per resource). Effects (targetSize, the patched rule) apply when the request is accepted,
unless the resource is declared to fail, in which case nothing changes.

Every resource must be declared first (`declare_*`, via the admin routes); undeclared ones
answer the 404 above.
"""

from __future__ import annotations

import secrets
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
    Handler,
    JsonObject,
    LongRunning,
    Router,
    SimulatorSettings,
    compute_error,
    exactly_one,
    http_reason,
    numeric_id,
    rfc3339,
    string_field,
)
from gcpcall.emulator.iam import CLOUD_PLATFORM

__all__ = [
    "COMPUTE_HOST",
    "ComputeApi",
    "ComputeOperation",
    "InstanceGroupManager",
    "SecurityPolicy",
]

COMPUTE_HOST = "compute.googleapis.com"
BASE_URL = f"https://{COMPUTE_HOST}/compute/v1"
DEFAULT_RULE_PRIORITY = 2147483647  # every Cloud Armor policy has this default rule
_DEFAULT_FAILURE = "The operation failed (declared in the emulator)."
_MAX_OPERATIONS = 10_000
_LOCATIONS = {"zones": "zone", "regions": "region"}


@dataclass
class _Failure:
    """How a failing operation on a resource reports its error."""

    code: str = "QUOTA_EXCEEDED"
    http_status: int = 403

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> _Failure:
        code = doc.get("fail_code", "QUOTA_EXCEEDED")
        status = doc.get("fail_http_status", 403)
        if not isinstance(code, str) or not code:
            raise ValueError("fail_code must be a non-empty string")
        if not isinstance(status, int) or isinstance(status, bool) or not 400 <= status <= 599:
            raise ValueError("fail_http_status must be an HTTP error status (400..599)")
        return cls(code, status)


@dataclass
class InstanceGroupManager:
    """A declared managed instance group (zonal or regional)."""

    project: str
    scope: str  # "zones" | "regions"
    location: str
    name: str
    behavior: Behavior
    failure: _Failure
    target_size: int = 0
    id: str = field(default_factory=numeric_id)
    requests: dict[str, str] = field(default_factory=dict)  # requestId -> operation path

    @property
    def path(self) -> str:
        return _mig_path(self.project, self.scope, self.location, self.name)

    def to_json(self) -> JsonObject:
        """As instanceGroupManagers.get returns it (the fields the simulator knows)."""
        doc: JsonObject = {
            "kind": "compute#instanceGroupManager",
            "id": self.id,
            "name": self.name,
            _LOCATIONS[
                self.scope
            ]: f"{BASE_URL}/projects/{self.project}/{self.scope}/{self.location}",
            "baseInstanceName": self.name,
            "targetSize": self.target_size,
            "selfLink": f"{BASE_URL}/{self.path}",
        }
        return doc

    def admin_json(self) -> JsonObject:
        return {
            "project": self.project,
            _LOCATIONS[self.scope]: self.location,
            "name": self.name,
            "target_size": self.target_size,
            "self_link": f"{BASE_URL}/{self.path}",
            **self.behavior.to_json(),
            "fail_code": self.failure.code,
            "fail_http_status": self.failure.http_status,
        }


@dataclass
class SecurityPolicy:
    """A declared Cloud Armor security policy with its rules by priority."""

    project: str
    name: str
    behavior: Behavior
    failure: _Failure
    rules: dict[int, JsonObject] = field(default_factory=dict)
    id: str = field(default_factory=numeric_id)
    requests: dict[str, str] = field(default_factory=dict)

    @property
    def path(self) -> str:
        return _policy_path(self.project, self.name)

    def admin_json(self) -> JsonObject:
        return {
            "project": self.project,
            "name": self.name,
            "rules": [self.rules[p] for p in sorted(self.rules)],
            "self_link": f"{BASE_URL}/{self.path}",
            **self.behavior.to_json(),
            "fail_code": self.failure.code,
            "fail_http_status": self.failure.http_status,
        }


@dataclass
class ComputeOperation:
    """A zonal, regional or global compute#operation."""

    project: str
    scope: str  # "zones" | "regions" | "global"
    location: str  # "" for global operations
    operation_type: str
    target_link: str
    target_id: str
    progress: LongRunning
    failure: _Failure
    user: str | None
    client_operation_id: str | None
    name: str = ""
    id: str = field(default_factory=numeric_id)

    def __post_init__(self) -> None:
        if not self.name:
            millis = int(self.progress.created * 1000)
            self.name = (
                f"operation-{millis}-{secrets.token_hex(7)[:13]}-"
                f"{secrets.token_hex(4)}-{secrets.token_hex(4)}"
            )

    @property
    def path(self) -> str:
        if self.scope == "global":
            return f"projects/{self.project}/global/operations/{self.name}"
        return f"projects/{self.project}/{self.scope}/{self.location}/operations/{self.name}"

    @property
    def self_link(self) -> str:
        return f"{BASE_URL}/{self.path}"

    def to_json(self, now: float, *, initial: bool = False) -> JsonObject:
        """The operation at `now`; `initial`: as the request that created it answers."""
        progress = self.progress
        done = progress.done(now)
        doc: JsonObject = {"kind": "compute#operation", "id": self.id, "name": self.name}
        if self.scope in _LOCATIONS:
            location = f"{BASE_URL}/projects/{self.project}/{self.scope}/{self.location}"
            doc[_LOCATIONS[self.scope]] = location
        if self.client_operation_id is not None:
            doc["clientOperationId"] = self.client_operation_id
        doc["operationType"] = self.operation_type
        doc["targetLink"] = self.target_link
        doc["targetId"] = self.target_id
        status = "DONE" if done else "PENDING" if initial else "RUNNING"
        doc["status"] = status
        if self.user:
            doc["user"] = self.user
        doc["progress"] = 100 if done else 0 if initial else int(progress.fraction(now) * 100)
        doc["insertTime"] = rfc3339(progress.created)
        if status != "PENDING":
            doc["startTime"] = rfc3339(progress.created)
        if done and progress.done_at is not None:
            doc["endTime"] = rfc3339(progress.done_at)
            if progress.behavior.fail is not None:
                doc["error"] = {
                    "errors": [{"code": self.failure.code, "message": progress.behavior.fail}]
                }
                doc["httpErrorStatusCode"] = self.failure.http_status
                doc["httpErrorMessage"] = http_reason(self.failure.http_status)
        doc["selfLink"] = self.self_link
        return doc

    def admin_json(self, now: float) -> JsonObject:
        return {**self.to_json(now), "polls": self.progress.polls}


class ComputeApi:
    """compute.googleapis.com: the declared MIGs and policies and their operations."""

    host = COMPUTE_HOST
    scopes = frozenset({CLOUD_PLATFORM, "https://www.googleapis.com/auth/compute"})

    def __init__(self, clock: Clock, settings: SimulatorSettings) -> None:
        self._clock = clock
        self._settings = settings
        self.migs: dict[str, InstanceGroupManager] = {}
        self.policies: dict[str, SecurityPolicy] = {}
        self.operations: OrderedDict[str, ComputeOperation] = OrderedDict()
        self.router = Router()
        projects = "/compute/v1/projects/{project}"
        for scope, rpc in (
            ("zones", "instanceGroupManagers"),
            ("regions", "regionInstanceGroupManagers"),
        ):
            migs = f"{projects}/{scope}/{{location}}/instanceGroupManagers/{{name}}"
            self.router.add("POST", f"{migs}/resize", f"compute.{rpc}.resize", self._resize(scope))
            self.router.add("GET", migs, f"compute.{rpc}.get", self._get_mig(scope))
        policy = f"{projects}/global/securityPolicies/{{name}}"
        self.router.add(
            "POST", f"{policy}/patchRule", "compute.securityPolicies.patchRule", self._patch_rule
        )
        self.router.add(
            "GET", f"{policy}/getRule", "compute.securityPolicies.getRule", self._get_rule
        )
        for scope, rpc in (("zones", "zoneOperations"), ("regions", "regionOperations")):
            ops = f"{projects}/{scope}/{{location}}/operations/{{operation}}"
            self.router.add("GET", ops, f"compute.{rpc}.get", self._get_operation(scope))
            self.router.add("POST", f"{ops}/wait", f"compute.{rpc}.wait", self._wait(scope))
        ops = f"{projects}/global/operations/{{operation}}"
        self.router.add("GET", ops, "compute.globalOperations.get", self._get_operation("global"))
        self.router.add(
            "POST", f"{ops}/wait", "compute.globalOperations.wait", self._wait("global")
        )

    # -- declarations (admin) ------------------------------------------------------------

    def declare_instance_group_manager(self, doc: Mapping[str, Any]) -> InstanceGroupManager:
        """Declare (or redeclare) a MIG: {"project", "zone" | "region", "name",
        "target_size"?, behaviour keys, "fail_code"?, "fail_http_status"?}."""
        scope = {"zone": "zones", "region": "regions"}[exactly_one(doc, ("zone", "region"))]
        size = doc.get("target_size", 0)
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError("target_size must be a non-negative integer")
        mig = InstanceGroupManager(
            project=string_field(doc, "project"),
            scope=scope,
            location=string_field(doc, _LOCATIONS[scope]),
            name=string_field(doc, "name"),
            behavior=Behavior.from_json(doc, _DEFAULT_FAILURE),
            failure=_Failure.from_json(doc),
            target_size=size,
        )
        self.migs[mig.path] = mig
        return mig

    def declare_security_policy(self, doc: Mapping[str, Any]) -> SecurityPolicy:
        """Declare a policy: {"project", "name", "rules"?: [SecurityPolicyRule...],
        behaviour keys, ...}; the default rule (priority 2147483647) always exists."""
        rules: dict[int, JsonObject] = {
            DEFAULT_RULE_PRIORITY: {
                "kind": "compute#securityPolicyRule",
                "description": "Default rule, higher priority overrides it",
                "priority": DEFAULT_RULE_PRIORITY,
                "match": {"versionedExpr": "SRC_IPS_V1", "config": {"srcIpRanges": ["*"]}},
                "action": "allow",
                "preview": False,
            }
        }
        given = doc.get("rules", [])
        if not isinstance(given, list):
            raise ValueError("rules must be a list of SecurityPolicyRule objects")
        for rule in given:
            priority = rule.get("priority") if isinstance(rule, dict) else None
            if not isinstance(priority, int) or isinstance(priority, bool) or priority < 0:
                raise ValueError("every rule needs an integer priority")
            rules[priority] = {"kind": "compute#securityPolicyRule", **rule}
        policy = SecurityPolicy(
            project=string_field(doc, "project"),
            name=string_field(doc, "name"),
            behavior=Behavior.from_json(doc, _DEFAULT_FAILURE),
            failure=_Failure.from_json(doc),
            rules=rules,
        )
        self.policies[policy.path] = policy
        return policy

    def forget_instance_group_manager(self, doc: Mapping[str, Any]) -> bool:
        scope = {"zone": "zones", "region": "regions"}[exactly_one(doc, ("zone", "region"))]
        project, name = string_field(doc, "project"), string_field(doc, "name")
        path = _mig_path(project, scope, string_field(doc, _LOCATIONS[scope]), name)
        return self.migs.pop(path, None) is not None

    def forget_security_policy(self, doc: Mapping[str, Any]) -> bool:
        path = _policy_path(string_field(doc, "project"), string_field(doc, "name"))
        return self.policies.pop(path, None) is not None

    def reset(self) -> None:
        """Forget every declaration and operation."""
        self.migs.clear()
        self.policies.clear()
        self.operations.clear()

    def declarations(self) -> JsonObject:
        return {
            "instance_group_managers": [m.admin_json() for m in self.migs.values()],
            "security_policies": [p.admin_json() for p in self.policies.values()],
        }

    def operations_json(self) -> list[JsonObject]:
        now = self._clock.timestamp()
        return [op.admin_json(now) for op in self.operations.values()]

    # -- the API -------------------------------------------------------------------------

    def _resize(self, scope: str) -> Handler:
        async def resize(call: ApiCall, params: Mapping[str, str]) -> JsonObject:
            mig = self._mig(scope, params)
            text = call.query.get("size")
            if text is None or text == "":
                raise compute_error(400, "Required field 'size' not specified", "required")
            try:
                size = int(text)
            except ValueError:
                size = -1
            if size < 0:
                raise compute_error(
                    400,
                    f"Invalid value for field 'size': '{text}'. "
                    "Must be greater than or equal to 0.",
                    "invalid",
                )
            rpc = "instanceGroupManagers" if scope == "zones" else "regionInstanceGroupManagers"
            op, fresh = self._operation_for(
                mig, call, scope, mig.location, f"compute.{rpc}.resize", mig.id
            )
            if fresh and op.progress.behavior.fail is None:
                mig.target_size = size
            return op.to_json(self._clock.timestamp(), initial=fresh)

        return resize

    def _get_mig(self, scope: str) -> Handler:
        async def get(call: ApiCall, params: Mapping[str, str]) -> JsonObject:
            return self._mig(scope, params).to_json()

        return get

    async def _patch_rule(self, call: ApiCall, params: Mapping[str, str]) -> JsonObject:
        policy = self._policy(params)
        rule = call.json_object()
        priority = self._priority(call, policy)
        op, fresh = self._operation_for(policy, call, "global", "", "patchRule", policy.id)
        validate_only = call.query.get("validateOnly", "").lower() == "true"
        if fresh and op.progress.behavior.fail is None and not validate_only:
            policy.rules[priority] = {**policy.rules[priority], **rule, "priority": priority}
        return op.to_json(self._clock.timestamp(), initial=fresh)

    async def _get_rule(self, call: ApiCall, params: Mapping[str, str]) -> JsonObject:
        policy = self._policy(params)
        return dict(policy.rules[self._priority(call, policy)])

    def _get_operation(self, scope: str) -> Handler:
        async def get(call: ApiCall, params: Mapping[str, str]) -> JsonObject:
            op = self._find_operation(scope, params)
            now = self._clock.timestamp()
            op.progress.poll(now)
            return op.to_json(now)

        return get

    def _wait(self, scope: str) -> Handler:
        async def wait(call: ApiCall, params: Mapping[str, str]) -> JsonObject:
            op = self._find_operation(scope, params)
            now = self._clock.timestamp()
            if not op.progress.done(now):
                until = now + self._settings.max_wait_seconds
                due = op.progress.due_at()
                if due is not None:
                    until = min(until, due)
                await self._clock.sleep_until_timestamp(until)
            now = self._clock.timestamp()
            op.progress.poll(now)
            return op.to_json(now)

        return wait

    # -- helpers -------------------------------------------------------------------------

    def _mig(self, scope: str, params: Mapping[str, str]) -> InstanceGroupManager:
        path = _mig_path(params["project"], scope, params["location"], params["name"])
        mig = self.migs.get(path)
        if mig is None:
            raise _not_found(path)
        return mig

    def _policy(self, params: Mapping[str, str]) -> SecurityPolicy:
        path = _policy_path(params["project"], params["name"])
        policy = self.policies.get(path)
        if policy is None:
            raise _not_found(path)
        return policy

    @staticmethod
    def _priority(call: ApiCall, policy: SecurityPolicy) -> int:
        text = call.query.get("priority", "0")
        try:
            priority = int(text)
        except ValueError:
            priority = -1
        if priority not in policy.rules:
            raise compute_error(
                400,
                f"Invalid value for field 'priority': '{text}'. "
                f"{policy.name} does not contain a rule at priority {text}.",
                "invalid",
            )
        return priority

    def _operation_for(
        self,
        resource: InstanceGroupManager | SecurityPolicy,
        call: ApiCall,
        scope: str,
        location: str,
        operation_type: str,
        target_id: str,
    ) -> tuple[ComputeOperation, bool]:
        """(operation, created now): a repeated requestId returns the first operation."""
        request_id = call.query.get("requestId")
        if request_id is not None:
            _check_request_id(request_id)
            earlier = self.operations.get(resource.requests.get(request_id, ""))
            if earlier is not None:
                return earlier, False
        op = ComputeOperation(
            project=resource.project,
            scope=scope,
            location=location,
            operation_type=operation_type,
            target_link=f"{BASE_URL}/{resource.path}",
            target_id=target_id,
            progress=LongRunning(resource.behavior, self._clock.timestamp()),
            failure=resource.failure,
            user=call.email,
            client_operation_id=request_id,
        )
        self.operations[op.path] = op
        while len(self.operations) > _MAX_OPERATIONS:
            self.operations.popitem(last=False)
        if request_id is not None:
            resource.requests[request_id] = op.path
        return op, True

    def _find_operation(self, scope: str, params: Mapping[str, str]) -> ComputeOperation:
        if scope == "global":
            path = f"projects/{params['project']}/global/operations/{params['operation']}"
        else:
            path = (
                f"projects/{params['project']}/{scope}/{params['location']}/"
                f"operations/{params['operation']}"
            )
        op = self.operations.get(path)
        if op is None:
            raise _not_found(path)
        return op


def _mig_path(project: str, scope: str, location: str, name: str) -> str:
    return f"projects/{project}/{scope}/{location}/instanceGroupManagers/{name}"


def _policy_path(project: str, name: str) -> str:
    return f"projects/{project}/global/securityPolicies/{name}"


def _not_found(path: str) -> ApiError:
    return compute_error(404, f"The resource '{path}' was not found", "notFound")


def _check_request_id(text: str) -> None:
    try:
        parsed = uuid.UUID(text)
    except ValueError:
        parsed = uuid.UUID(int=0)
    if parsed.int == 0:
        raise compute_error(
            400,
            f"Invalid value for field 'requestId': '{text}'. The request ID must be a valid "
            "UUID with the exception that zero UUID is not supported "
            "(00000000-0000-0000-0000-000000000000).",
            "invalid",
        )
