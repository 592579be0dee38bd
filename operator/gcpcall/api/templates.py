"""Per-run templates in a Relay call's uri, header values and body, rendered by the relay.

Why Jinja2's sandbox, narrowed further: a template is written by whoever may edit the
object, and rendered inside the relay, beside the object's Google credentials. Jinja2's
`ImmutableSandboxedEnvironment` with `StrictUndefined` parses and renders; on top of it
every template is checked node by node before it is accepted, and only this is allowed:
text, `run.id`, `run.scheduleTime`, `run.attempt`, `object.namespace`, `object.name`,
`now`, string or number constants, and the `date(format)` filter. No statements (so no
loops, includes or macros), no operators (so no `'x' * 10**9`), no calls, no attribute of
any Python object (the sandbox refuses them all, and the context is plain strings), no
other filter or global. So a template's output is bounded by its own length and the
context's, and it can read nothing but the context.

Direct delivery renders nothing (Cloud Scheduler sends the bytes as they are): a string
that uses the context (`{{ run.`, `{{ now`, `{{ object.`) is refused there, other braces
are data.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from gcpcall.api.errors import InvalidSpec
from gcpcall.api.observed import format_time, parse_time
from gcpcall.api.target import Target, check_uri

__all__ = [
    "MAX_RENDERED_CHARS",
    "RenderedRequest",
    "RunContext",
    "check_templates",
    "render",
    "render_request",
    "templated",
    "uses_run_id",
]

MAX_RENDERED_CHARS = 65536  # of one rendered string
_FIELDS = {"run": ("id", "scheduleTime", "attempt"), "object": ("namespace", "name")}
_USES_CONTEXT = re.compile(r"\{\{-?\s*(run|now|object)\b")
_MARKERS = ("{{", "{%", "{#")
_SENSITIVE = re.compile(r"(?i)(auth|token|secret|key|cookie|password|credential)")
_ALLOWED = "run.id, run.scheduleTime, run.attempt, object.namespace, object.name, now, " \
           "and the date('%Y%m%d') filter"
_SAMPLE_TIME = datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC)


def _date(value: Any, fmt: str = "%Y-%m-%dT%H:%M:%SZ") -> str:
    if not isinstance(value, str) or not isinstance(fmt, str) or len(fmt) > 64:
        raise TemplateError("date() formats now or run.scheduleTime with a short format")
    return parse_time(value).strftime(fmt)


class _Env(ImmutableSandboxedEnvironment):
    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        return False  # the context is dicts of strings: items only, never attributes

    def is_safe_callable(self, obj: Any) -> bool:
        return False


_ENV = _Env(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
_ENV.filters = {"date": _date}
_ENV.globals = {}
_ENV.tests = {}


@dataclass(frozen=True)
class RunContext:
    run_id: str
    schedule_time: datetime
    attempt: int
    namespace: str
    name: str
    now: datetime

    def variables(self) -> dict[str, Any]:
        return {
            "run": {"id": self.run_id, "scheduleTime": format_time(self.schedule_time),
                    "attempt": str(self.attempt)},
            "object": {"namespace": self.namespace, "name": self.name},
            "now": format_time(self.now),
        }


def _refuse(field_path: str, node: nodes.Node, what: str) -> InvalidSpec:
    return InvalidSpec(field_path, f"line {node.lineno}: {what}; a template may use only "
                                   f"{_ALLOWED}")


def _check_node(node: nodes.Node, field_path: str, parent: nodes.Node | None) -> None:
    if isinstance(node, nodes.Template | nodes.Output | nodes.TemplateData):
        pass
    elif isinstance(node, nodes.Name):
        if node.name not in ("run", "object", "now"):
            raise _refuse(field_path, node, f"'{node.name}' is not in the template context")
        if node.name in _FIELDS and not isinstance(parent, nodes.Getattr):
            raise _refuse(field_path, node, f"name a field of {node.name} "
                                            f"({', '.join(_FIELDS[node.name])})")
    elif isinstance(node, nodes.Getattr):
        target = node.node
        if not isinstance(target, nodes.Name) or target.name not in _FIELDS \
                or node.attr not in _FIELDS[target.name]:
            raise _refuse(field_path, node, f"'.{node.attr}' is not a field of the context")
    elif isinstance(node, nodes.Filter):
        if node.name != "date" or node.kwargs or node.dyn_args or node.dyn_kwargs \
                or len(node.args) > 1 or not all(
                    isinstance(a, nodes.Const) and isinstance(a.value, str) for a in node.args):
            raise _refuse(field_path, node, f"the filter '{node.name}' is not allowed (only "
                                            "date with one format string)")
    elif isinstance(node, nodes.Const):
        if not isinstance(node.value, str | int) or isinstance(node.value, bool):
            raise _refuse(field_path, node, "only string and number constants are allowed")
    else:
        raise _refuse(field_path, node, f"{type(node).__name__.lower()} is not allowed")
    for child in node.iter_child_nodes():
        _check_node(child, field_path, node)


@lru_cache(maxsize=1024)
def _compiled(source: str, field_path: str) -> Any:
    try:
        tree = _ENV.parse(source)
    except TemplateSyntaxError as e:
        raise InvalidSpec(field_path, f"line {e.lineno}: is not a valid template: "
                                      f"{e.message}") from None
    _check_node(tree, field_path, None)
    return _ENV.from_string(tree)


def render(source: str, context: RunContext, field_path: str) -> str:
    """Render one templated string; InvalidSpec naming the field if it is not allowed."""
    if not any(marker in source for marker in _MARKERS):
        return source
    try:
        out = str(_compiled(source, field_path).render(context.variables()))
    except InvalidSpec:
        raise
    except (TemplateError, ValueError, TypeError) as e:
        raise InvalidSpec(field_path, f"cannot be rendered: {e}") from None
    if len(out) > MAX_RENDERED_CHARS:
        raise InvalidSpec(field_path, f"renders to {len(out)} characters; at most "
                                      f"{MAX_RENDERED_CHARS}")
    return out


def _json_strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _json_strings(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _json_strings(item, f"{path}[{i}]")


def _json_body(target: Target) -> Any | None:
    body = target.body
    if body is None or body.data is None or body.kind != "json":
        return None
    return json.loads(body.data)


def _strings(target: Target, path: str) -> Iterator[tuple[str, str]]:
    """Every string a template may be in: (field path, value)."""
    yield f"{path}.uri", target.uri
    for i, header in enumerate(target.headers):
        yield f"{path}.headers[{i}].value", header.value
    body = target.body
    if body is not None and body.data is not None:
        if body.kind == "text":
            yield f"{path}.body.text", body.data.decode()
        elif body.kind == "json":
            yield from _json_strings(json.loads(body.data), f"{path}.body.json")


def check_templates(target: Target, relay: bool, path: str = "spec.target",
                    *, allow_http: bool = False) -> None:
    """Relay: every template parses, is allowed, and renders a valid request. Direct: no
    string uses the template context (only the relay renders it)."""
    sample = RunContext("0" * 36, _SAMPLE_TIME, 99, "n" * 63, "n" * 253, _SAMPLE_TIME)
    for field_path, value in _strings(target, path):
        if not relay:
            if _USES_CONTEXT.search(value):
                raise InvalidSpec(field_path, "uses the template context ({{ run... }}, "
                                              "{{ now }}, {{ object... }}), which only "
                                              "delivery: Relay renders; Cloud Scheduler and "
                                              "Cloud Tasks would send the braces as they are")
            continue
        rendered = render(value, sample, field_path)
        if field_path.endswith(".uri") and rendered != value:
            _check_rendered_uri(target, rendered, field_path, allow_http)


def _check_rendered_uri(target: Target, uri: str, field_path: str, allow_http: bool) -> None:
    parts = check_uri(uri, field_path, allow_http=allow_http)
    if parts.hostname != target.host:
        raise InvalidSpec(field_path, "a template may not change the host of the uri (the "
                                      "call's token is for that host)")


@dataclass(frozen=True)
class RenderedRequest:
    uri: str
    headers: dict[str, str]
    body: bytes | None
    fields: dict[str, str] = field(default_factory=dict)  # templated field -> rendered value
    run_id: str | None = None  # the run's id, when the request was rendered for a run

    def record(self) -> dict[str, Any]:
        """What a run shows of it: the uri, and the templated values (trimmed; header
        values that may carry secrets are never shown)."""
        return {"uri": self.uri[:4096],
                "fields": {k: v[:512] for k, v in list(self.fields.items())[:64]}}


def templated(target: Target) -> bool:
    """Whether a run renders anything in `target`: a template marker in its uri, a header
    value or the inline body (anywhere in it: an over-approximation, which costs only a
    rendering that changes nothing)."""
    if any(m in text for text in (target.uri, *(h.value for h in target.headers))
           for m in _MARKERS):
        return True
    inline = target.body
    return (inline is not None and inline.data is not None
            and any(m.encode() in inline.data for m in _MARKERS))


def render_request(target: Target, context: Callable[[], RunContext], body: bytes | None,
                   path: str = "spec.target", *, allow_http: bool = False) -> RenderedRequest:
    """The request for one run: templates in uri, header values and the inline body
    rendered; `body` is the request body as resolved (inline or from a ConfigMap/Secret).

    `context` is called only for a `templated` target: one without a template is sent as
    the spec states it, and its run needs no context (its `run.id` is a uuid5, on the
    relay's path to the target). That is what a rendering would send: the inline JSON body
    is already in the sorted, compact form a rendering writes (api/target.py)."""
    if not templated(target):
        return RenderedRequest(target.uri, {h.name: h.value for h in target.headers}, body)
    return _render(target, context(), body, path, allow_http)


def _render(target: Target, context: RunContext, body: bytes | None, path: str,
            allow_http: bool) -> RenderedRequest:
    fields: dict[str, str] = {}

    def one(field_path: str, value: str) -> str:
        out = render(value, context, field_path)
        if out != value or any(m in value for m in _MARKERS):
            fields[field_path] = out
        return out

    uri = one(f"{path}.uri", target.uri)
    if uri != target.uri:
        _check_rendered_uri(target, uri, f"{path}.uri", allow_http)
    headers: dict[str, str] = {}
    for i, header in enumerate(target.headers):
        value = one(f"{path}.headers[{i}].value", header.value)
        headers[header.name] = value
        if _SENSITIVE.search(header.name):
            fields.pop(f"{path}.headers[{i}].value", None)
    rendered_body = body
    inline = target.body
    if inline is not None and inline.data is not None:
        if inline.kind == "text":
            rendered_body = one(f"{path}.body.text", inline.data.decode()).encode()
        elif inline.kind == "json":
            rendered_body = json.dumps(_render_json(json.loads(inline.data), f"{path}.body.json",
                                                    one),
                                       sort_keys=True, separators=(",", ":"),
                                       ensure_ascii=False).encode()
    return RenderedRequest(uri, headers, rendered_body, fields, context.run_id)


def _render_json(value: Any, path: str, one: Any) -> Any:
    if isinstance(value, str):
        return one(path, value)
    if isinstance(value, dict):
        return {k: _render_json(v, f"{path}.{k}", one) for k, v in value.items()}
    if isinstance(value, list):
        return [_render_json(v, f"{path}[{i}]", one) for i, v in enumerate(value)]
    return value


def uses_run_id(request: RenderedRequest) -> bool:
    """Whether the rendered request carries its run's id (a name unique to the run)."""
    run_id = request.run_id
    return run_id is not None and any(run_id in v for v in (request.uri,
                                                            *request.fields.values()))

