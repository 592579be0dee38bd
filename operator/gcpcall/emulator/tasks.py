"""Cloud Tasks v2 over gRPC: `google.cloud.tasks.v2.CloudTasks`, served by the emulator.

Why: the operator's GcpTask code path, the demo and the conformance tests talk to Cloud
Tasks through the official client library; this service answers them as Cloud Tasks does
(codes, field semantics, defaults), registered as a generic gRPC handler over the message
classes `google-cloud-tasks` ships, so no protoc step is needed. Request validation lives
here; queues, dispatch and tombstones live in `tasks_engine`. The admin routes
(`tasks_admin`) see this service through a protocol and are wired by `server`, so this
module never imports them.

With authentication on (`rpcauth`), every RPC needs a bearer token, and CreateTask (and
CreateQueue/UpdateQueue with a queue-level HTTP target) needs `iam.serviceAccounts.actAs`
on the OAuth/OIDC token service account it attaches.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import grpc
from google.cloud.tasks_v2 import types as tasks_types
from google.protobuf import empty_pb2, field_mask_pb2

from gcpcall.emulator.iam import CLOUD_PLATFORM
from gcpcall.emulator.rpcauth import AuthRefused
from gcpcall.emulator.tasks_engine import TasksCore, TasksEngine, TasksSettings
from gcpcall.emulator.tasks_model import (
    DEFAULT_DISPATCH_DEADLINE,
    MAX_DISPATCH_DEADLINE,
    MAX_LIST_QUEUES_PAGE,
    MAX_LIST_TASKS_PAGE,
    MAX_SCHEDULE_AHEAD,
    MAX_TASK_SIZE,
    MAX_URL_LENGTH,
    MIN_DISPATCH_DEADLINE,
    TasksError,
    apply_queue_defaults,
    decode_page_token,
    encode_page_token,
    parse_location,
    parse_queue_name,
    parse_task_name,
    queue_filter_state,
    validate_queue_config,
    validate_retry_config,
    validate_update_mask,
)
from gcpcall.emulator.tasks_state import QueuePb, QueueRecord, TaskHistory, TaskRecord, micros

__all__ = ["SERVICE_NAME", "TasksService", "TasksSettings"]

SERVICE_NAME = "google.cloud.tasks.v2.CloudTasks"

_INVALID = grpc.StatusCode.INVALID_ARGUMENT
_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
_MUTABLE_QUEUE_FIELDS = (
    "app_engine_routing_override",
    "http_target",
    "rate_limits",
    "retry_config",
    "stackdriver_logging_config",
)
_BODY_METHODS = frozenset(
    {tasks_types.HttpMethod.POST, tasks_types.HttpMethod.PUT, tasks_types.HttpMethod.PATCH}
)
_MAX_HEADERS_SIZE = 80 * 1024  # HttpRequest.headers: "must be less than 80KB"
_SCOPES = (CLOUD_PLATFORM, "https://www.googleapis.com/auth/cloud-tasks")

Handler = Callable[[Any], Any]


def _pb(name: str) -> Any:
    return getattr(tasks_types, name).pb()


class TasksService:
    """The Cloud Tasks v2 service: RPCs, dispatch loop, tombstones, attempt history.

    `core` provides `clock, dispatcher, tokens, faults, calls` (see gcpcall.emulator.core).
    """

    def __init__(
        self,
        core: TasksCore,
        *,
        task_tombstone_seconds: float = 3600.0,
        queue_tombstone_seconds: float = 7 * 86400.0,
    ) -> None:
        self.core = core
        self.engine = TasksEngine(
            core,
            TasksSettings(
                task_tombstone_seconds=task_tombstone_seconds,
                queue_tombstone_seconds=queue_tombstone_seconds,
            ),
        )
        # method -> (implementation, request class, response class)
        self._methods: dict[str, tuple[Handler, Any, Any]] = {
            "CreateQueue": (self._create_queue, _pb("CreateQueueRequest"), QueuePb),
            "GetQueue": (self._get_queue, _pb("GetQueueRequest"), QueuePb),
            "ListQueues": (self._list_queues, _pb("ListQueuesRequest"), _pb("ListQueuesResponse")),
            "UpdateQueue": (self._update_queue, _pb("UpdateQueueRequest"), QueuePb),
            "DeleteQueue": (self._delete_queue, _pb("DeleteQueueRequest"), empty_pb2.Empty),
            "PurgeQueue": (self._purge_queue, _pb("PurgeQueueRequest"), QueuePb),
            "PauseQueue": (self._pause_queue, _pb("PauseQueueRequest"), QueuePb),
            "ResumeQueue": (self._resume_queue, _pb("ResumeQueueRequest"), QueuePb),
            "CreateTask": (self._create_task, _pb("CreateTaskRequest"), _pb("Task")),
            "GetTask": (self._get_task, _pb("GetTaskRequest"), _pb("Task")),
            "ListTasks": (self._list_tasks, _pb("ListTasksRequest"), _pb("ListTasksResponse")),
            "DeleteTask": (self._delete_task, _pb("DeleteTaskRequest"), empty_pb2.Empty),
            "RunTask": (self._run_task, _pb("RunTaskRequest"), _pb("Task")),
        }

    @property
    def settings(self) -> TasksSettings:
        """Tombstone windows; changes apply at once (also to names already refused)."""
        return self.engine.settings

    def history(self, name: str) -> TaskHistory | None:
        """Every attempt of a task, also after it is gone (None if never seen)."""
        return self.engine.history(name)

    def histories(self, queue_name: str | None = None) -> list[TaskHistory]:
        """All remembered task histories, oldest first, optionally of one queue."""
        return self.engine.histories(queue_name)

    def make_due(self, queue_name: str | None = None, task_name: str | None = None) -> int:
        """Make matching live tasks due now (admin); returns how many matched."""
        return self.engine.make_due(queue_name=queue_name, task_name=task_name)

    async def start(self) -> None:
        """Start the dispatch loop (call on the event loop the gRPC server runs on)."""
        await self.engine.start()

    async def stop(self) -> None:
        """Stop the dispatch loop; attempts in flight are abandoned."""
        await self.engine.stop()

    def generic_handler(self) -> grpc.GenericRpcHandler:
        """The handler to add to a `grpc.aio` server."""
        handlers = {
            method: grpc.unary_unary_rpc_method_handler(
                self._serving(method, impl),
                request_deserializer=request_cls.FromString,
                response_serializer=response_cls.SerializeToString,
            )
            for method, (impl, request_cls, response_cls) in self._methods.items()
        }
        return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)

    def _serving(
        self, method: str, impl: Handler
    ) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Any]:
        calls, auth = self.core.calls, self.core.auth

        async def serve(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                caller = auth.authenticate(context.invocation_metadata(), _SCOPES)
            except AuthRefused as refused:
                calls.record(SERVICE_NAME, method, refused.code, None)
                await context.abort(refused.code, refused.message)
            principal = caller.principal if caller is not None else None
            try:
                await self.core.faults.apply(method, context)
            except BaseException:
                calls.record(SERVICE_NAME, method, _aborted_code(context), principal)
                raise
            try:
                with auth.acting_as(caller):
                    response = impl(request)
            except (TasksError, AuthRefused) as refusal:
                calls.record(SERVICE_NAME, method, refusal.code, principal)
                await context.abort(refusal.code, refusal.message)
            except Exception:  # a bug: gRPC answers UNKNOWN, the log should say so too
                calls.record(SERVICE_NAME, method, grpc.StatusCode.UNKNOWN, principal)
                raise
            calls.record(SERVICE_NAME, method, grpc.StatusCode.OK, principal)
            return response

        return serve

    # -- queues ---------------------------------------------------------------------------

    def _create_queue(self, request: Any) -> Any:
        parent = request.parent
        parse_location(parent)
        if not request.queue.name:
            raise TasksError(_INVALID, "Queue.name must be set.")
        name = parse_queue_name(request.queue.name)
        if name.parent != parent:
            raise TasksError(
                _INVALID, f'Queue name "{name}" does not belong to the parent "{parent}".'
            )
        if str(name) in self.engine.queues:
            raise TasksError(grpc.StatusCode.ALREADY_EXISTS, "Requested entity already exists")
        if self.engine.queue_tombstoned(str(name)):
            raise TasksError(
                _PRECONDITION,
                "The queue cannot be created because a queue with this name existed too recently.",
            )
        config = QueuePb(name=str(name))
        for field_name in _MUTABLE_QUEUE_FIELDS:
            if request.queue.HasField(field_name):
                getattr(config, field_name).CopyFrom(getattr(request.queue, field_name))
        validate_queue_config(config)
        self.core.auth.require_act_as(_token_account(config))
        apply_queue_defaults(config)
        config.state = QueuePb.State.RUNNING
        queue = QueueRecord(name=name, config=config)
        self.engine.add_queue(queue)
        return queue.rendered()

    def _get_queue(self, request: Any) -> Any:
        parse_queue_name(request.name)
        return self.engine.require_queue(request.name).rendered()

    def _list_queues(self, request: Any) -> Any:
        parse_location(request.parent)
        state = queue_filter_state(request.filter)
        page_size = _page_size(request.page_size, MAX_LIST_QUEUES_PAGE)
        scope = f"queues:{request.parent}:{request.filter}"
        after = decode_page_token(scope, request.page_token) if request.page_token else ""
        prefix = request.parent + "/queues/"
        names = sorted(
            name
            for name, queue in self.engine.queues.items()
            if name.startswith(prefix) and (state is None or queue.config.state == state)
        )
        names = [name for name in names if name > after]
        response = _pb("ListQueuesResponse")()
        for name in names[:page_size]:
            response.queues.append(self.engine.queues[name].rendered())
        if len(names) > page_size:
            response.next_page_token = encode_page_token(scope, names[page_size - 1])
        return response

    def _update_queue(self, request: Any) -> Any:
        """UpdateQueue: "This method creates the queue if it does not exist and updates the
        queue if it does exist." An empty update_mask updates every field."""
        if not request.queue.name:
            raise TasksError(_INVALID, "Queue.name must be set.")
        name = parse_queue_name(request.queue.name)
        existing = self.engine.queues.get(str(name))
        if existing is None and self.engine.queue_tombstoned(str(name)):
            raise TasksError(
                _PRECONDITION,
                "The queue cannot be created because a queue with this name existed too recently.",
            )
        paths = validate_update_mask(request.update_mask) if request.update_mask.paths else []
        config = QueuePb()
        if existing is not None:
            config.CopyFrom(existing.config)
        else:
            config.name = str(name)
            config.state = QueuePb.State.RUNNING
        if paths:
            field_mask_pb2.FieldMask(paths=paths).MergeMessage(
                request.queue, config, replace_message_field=True, replace_repeated_field=True
            )
        elif not request.update_mask.paths:
            for field_name in _MUTABLE_QUEUE_FIELDS:
                config.ClearField(field_name)
                if request.queue.HasField(field_name):
                    getattr(config, field_name).CopyFrom(getattr(request.queue, field_name))
        validate_queue_config(config)
        account = _token_account(config)
        if existing is None or account != _token_account(existing.config):
            self.core.auth.require_act_as(account)
        apply_queue_defaults(config)
        if existing is not None:
            existing.config = config
            self.engine.poke()
            return existing.rendered()
        queue = QueueRecord(name=name, config=config)
        self.engine.add_queue(queue)
        return queue.rendered()

    def _delete_queue(self, request: Any) -> Any:
        parse_queue_name(request.name)
        self.engine.delete_queue(request.name)
        return empty_pb2.Empty()

    def _purge_queue(self, request: Any) -> Any:
        parse_queue_name(request.name)
        return self.engine.purge_queue(request.name).rendered()

    def _pause_queue(self, request: Any) -> Any:
        parse_queue_name(request.name)
        return self.engine.set_paused(request.name, True).rendered()

    def _resume_queue(self, request: Any) -> Any:
        parse_queue_name(request.name)
        return self.engine.set_paused(request.name, False).rendered()

    # -- tasks ----------------------------------------------------------------------------

    def _create_task(self, request: Any) -> Any:
        parent = request.parent
        queue_name = parse_queue_name(parent)
        queue = self.engine.queues.get(parent)
        if queue is None:
            # Cloud Tasks answers FAILED_PRECONDITION (not NOT_FOUND) for a missing queue.
            if self.engine.queue_tombstoned(parent):
                raise TasksError(
                    _PRECONDITION,
                    "The queue no longer exists, though a queue with this name existed recently.",
                )
            raise TasksError(_PRECONDITION, "Queue does not exist.")
        view = _view(request.response_view)
        given = request.task
        if given.name:
            task_name = parse_task_name(given.name)
            if task_name.queue != queue_name:
                raise TasksError(
                    _INVALID,
                    f"The queue name from request ('{parent}') must be the same as the "
                    f"queue name in the named task ('{given.name}').",
                )
            if given.name in queue.tasks or self.engine.task_tombstoned(given.name):
                raise TasksError(grpc.StatusCode.ALREADY_EXISTS, "Requested entity already exists")
        else:
            task_name = parse_task_name(f"{parent}/tasks/{self._new_task_id(queue)}")
        if given.ByteSize() > MAX_TASK_SIZE:
            raise TasksError(_INVALID, "Task size exceeds the maximum of 1MB.")
        http_request = _http_request(given)
        auth = http_request.WhichOneof("authorization_header")
        if auth is not None:
            self.core.auth.require_act_as(getattr(http_request, auth).service_account_email)
        now = self.engine.now()
        schedule_time = micros(now)
        if given.HasField("schedule_time"):
            wanted = given.schedule_time.ToNanoseconds() / 1e9
            if wanted > now + MAX_SCHEDULE_AHEAD:
                raise TasksError(
                    _INVALID, "Task.schedule_time must be at most 30 days in the future."
                )
            schedule_time = micros(max(now, wanted))
        deadline = DEFAULT_DISPATCH_DEADLINE
        if given.HasField("dispatch_deadline"):
            deadline = given.dispatch_deadline.ToMilliseconds() / 1000.0
            if not MIN_DISPATCH_DEADLINE <= deadline <= MAX_DISPATCH_DEADLINE:
                raise TasksError(
                    _INVALID, "Task.dispatch_deadline must be between 15 seconds and 30 minutes."
                )
        retry_config = None
        if given.HasField("retry_config"):
            validate_retry_config(given.retry_config, "Task.retry_config")
            retry_config = given.retry_config
        task = TaskRecord(
            name=task_name,
            http_request=http_request,
            schedule_time=schedule_time,
            create_time=float(int(now)),  # Cloud Tasks reports create_time in whole seconds
            dispatch_deadline=deadline,
            retry_config=retry_config,
        )
        self.engine.add_task(queue, task)
        return task.to_pb(view)

    def _new_task_id(self, queue: QueueRecord) -> str:
        """A server-assigned id: Cloud Tasks picks a random decimal number."""
        while True:
            task_id = str(secrets.randbelow(9 * 10**18) + 10**18)
            name = f"{queue.name}/tasks/{task_id}"
            if name not in queue.tasks and not self.engine.task_tombstoned(name):
                return task_id

    def _get_task(self, request: Any) -> Any:
        parse_task_name(request.name)
        _, task = self.engine.find_task(request.name)
        return task.to_pb(_view(request.response_view))

    def _list_tasks(self, request: Any) -> Any:
        parse_queue_name(request.parent)
        queue = self.engine.require_queue(request.parent)
        view = _view(request.response_view)
        page_size = _page_size(request.page_size, MAX_LIST_TASKS_PAGE)
        scope = f"tasks:{request.parent}"
        after = decode_page_token(scope, request.page_token) if request.page_token else ""
        names = sorted(name for name in queue.tasks if name > after)
        response = _pb("ListTasksResponse")()
        for name in names[:page_size]:
            response.tasks.append(queue.tasks[name].to_pb(view))
        if len(names) > page_size:
            response.next_page_token = encode_page_token(scope, names[page_size - 1])
        return response

    def _delete_task(self, request: Any) -> Any:
        parse_task_name(request.name)
        self.engine.delete_task(request.name)
        return empty_pb2.Empty()

    def _run_task(self, request: Any) -> Any:
        parse_task_name(request.name)
        view = _view(request.response_view)
        return self.engine.run_task(request.name).to_pb(view)


def _http_request(task: Any) -> Any:
    """The task's HttpRequest as stored, validated against the reference's rules."""
    payload = task.WhichOneof("message_type")
    if payload == "app_engine_http_request":
        raise TasksError(
            grpc.StatusCode.UNIMPLEMENTED,
            "App Engine tasks are not emulated; use Task.http_request.",
        )
    if payload is None:
        raise TasksError(_INVALID, "Task.http_request must be set.")
    request = _pb("HttpRequest")()
    request.CopyFrom(task.http_request)
    url = request.url
    if not url.startswith(("http://", "https://")):
        raise TasksError(_INVALID, 'HttpRequest.url must begin with "http://" or "https://".')
    if len(url) > MAX_URL_LENGTH:
        raise TasksError(_INVALID, "HttpRequest.url is longer than 2083 characters.")
    if request.http_method == tasks_types.HttpMethod.HTTP_METHOD_UNSPECIFIED:
        request.http_method = tasks_types.HttpMethod.POST
    if request.body and request.http_method not in _BODY_METHODS:
        raise TasksError(
            _INVALID, "A request body is allowed only if the HTTP method is POST, PUT, or PATCH."
        )
    auth = request.WhichOneof("authorization_header")
    if auth is not None and not getattr(request, auth).service_account_email:
        raise TasksError(_INVALID, f"HttpRequest.{auth}.service_account_email must be set.")
    if sum(len(k) + len(v) for k, v in request.headers.items()) >= _MAX_HEADERS_SIZE:
        raise TasksError(_INVALID, "HttpRequest.headers must be less than 80KB.")
    # HttpRequest.headers: "User-Agent: This will be set to "Google-Cloud-Tasks"."
    for key in [k for k in request.headers if k.lower() == "user-agent"]:
        del request.headers[key]
    request.headers["User-Agent"] = "Google-Cloud-Tasks"
    return request


def _token_account(queue: Any) -> str:
    """The token service account of a queue-level HTTP target override ("" for none)."""
    if not queue.HasField("http_target"):
        return ""
    auth = queue.http_target.WhichOneof("authorization_header")
    return str(getattr(queue.http_target, auth).service_account_email) if auth else ""


def _view(view: int) -> int:
    if view not in (0, 1, 2):
        raise TasksError(_INVALID, f"Unknown response_view {view}.")
    return int(view) or int(tasks_types.Task.View.BASIC)


def _page_size(requested: int, maximum: int) -> int:
    """page_size: "If unspecified, the page size will be the maximum."."""
    if requested < 0:
        raise TasksError(_INVALID, "page_size must not be negative.")
    return min(requested or maximum, maximum)


def _aborted_code(context: grpc.aio.ServicerContext[Any, Any]) -> grpc.StatusCode:
    """The code a call was aborted with (by the fault injector)."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    for status in grpc.StatusCode:
        if status.value[0] == code:
            return status
    return grpc.StatusCode.UNKNOWN
