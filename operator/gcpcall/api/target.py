"""The `target` block shared by both kinds: the HTTP request Google sends, validated.

Why here and not in the CRD schema alone: CEL cannot parse a URL the way an HTTP client
does, cannot serialize a JSON body to measure it, and cannot know whether the operator runs
against an emulator (which allows http://). Every rule that decides where a Google-minted
token may be sent is checked here, before any Google call, with the field named.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal
from urllib.parse import SplitResult, urlsplit

from gcpcall.api._fields import child, opt_list, opt_map, opt_str, req_str
from gcpcall.api.errors import InvalidSpec

__all__ = [
    "DEFAULT_OAUTH_SCOPE",
    "MAX_REQUEST_BYTES",
    "MAX_URI_LENGTH",
    "Auth",
    "Body",
    "BodySource",
    "Header",
    "Method",
    "OAuthToken",
    "OidcToken",
    "Target",
    "check_request_size",
    "check_uri",
    "parse_target",
]

DEFAULT_OAUTH_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
MAX_URI_LENGTH = 2083
MAX_REQUEST_BYTES = 1024 * 1024  # Cloud Scheduler job / Cloud Tasks task size limit
MAX_HEADER_BYTES = 80 * 1024  # Cloud Scheduler: "total size of headers must be < 80KB"

_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 field-name
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # controls except HTAB
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# Google sets these itself; a user value would be dropped, replaced, or leak credentials.
_RESERVED_NAMES = frozenset({"authorization", "host", "content-length"})
_RESERVED_PREFIXES = ("x-google-", "x-appengine-", "x-cloudscheduler")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_TEMPLATE_SPAN = re.compile(r"\{\{.*?\}\}|\{%.*?%\}")


class Method(StrEnum):
    GET = "GET"
    POST = "POST"
    PUT = "PUT"
    PATCH = "PATCH"
    DELETE = "DELETE"
    HEAD = "HEAD"
    OPTIONS = "OPTIONS"


@dataclass(frozen=True)
class Header:
    name: str
    value: str


@dataclass(frozen=True)
class BodySource:
    """A body kept in a ConfigMap or Secret; reading it is I/O, done by the reconciler."""

    kind: Literal["ConfigMap", "Secret"]
    name: str
    key: str


@dataclass(frozen=True)
class Body:
    """Exactly one of `data` (inline json/text, already serialized) or `source`.
    `kind` says which inline form `data` came from (templates walk a json body's strings)."""

    data: bytes | None = None
    source: BodySource | None = None
    kind: Literal["json", "text"] | None = None


@dataclass(frozen=True)
class OAuthToken:
    scope: str


@dataclass(frozen=True)
class OidcToken:
    audience: str  # the default (the uri) is already applied


@dataclass(frozen=True)
class Auth:
    token: OAuthToken | OidcToken
    service_account_email: str | None  # None: the identity's Google service account


@dataclass(frozen=True)
class Target:
    uri: str
    method: Method
    headers: tuple[Header, ...]
    body: Body | None
    auth: Auth | None

    @property
    def host(self) -> str:
        return urlsplit(self.uri).hostname or ""


def _check_host(host: str, netloc: str, field: str) -> None:
    if netloc.startswith("["):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise InvalidSpec(field, f"has an invalid IPv6 host {host!r}") from None
        return
    if len(host) > 253 or not all(_LABEL.match(label) for label in host.split(".")):
        raise InvalidSpec(field, f"has an invalid host name {host!r}")


def check_uri(uri: str, field: str, *, allow_http: bool) -> SplitResult:
    """Parse `uri` strictly enough that what we check is what an HTTP client will call.

    Userinfo, backslashes and non-ASCII are refused outright: parsers disagree on them
    (`https://a.googleapis.com\\@evil.example/` is one host to Python and another to a
    browser-grade parser), and the oauth rule below must hold for every parser.
    """
    if len(uri) > MAX_URI_LENGTH:
        raise InvalidSpec(field, f"is {len(uri)} characters long; at most {MAX_URI_LENGTH}")
    if not uri.isascii() or re.search(r"[\x00-\x20\x7f\\]", uri):
        raise InvalidSpec(
            field, "must be ASCII without spaces, control characters or backslashes "
            "(percent-encode them)"
        )
    try:
        parts = urlsplit(uri)
    except ValueError as exc:
        raise InvalidSpec(field, f"is not a URL: {exc}") from None
    allowed = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in allowed or not uri.lower().startswith(parts.scheme + "://"):
        want = "https:// (or http:// against an emulator)" if allow_http else "https://"
        raise InvalidSpec(field, f"must be an absolute {want} URL")
    if "@" in parts.netloc:
        raise InvalidSpec(field, "must not contain user info (user:password@)")
    host = parts.hostname
    if not host:
        raise InvalidSpec(field, "must name a host")
    try:
        port = parts.port
    except ValueError:
        raise InvalidSpec(field, "has an invalid port") from None
    if port == 0:
        raise InvalidSpec(field, "has an invalid port")
    _check_host(host, parts.netloc, field)
    return parts


def _is_google_api_host(parts: SplitResult) -> bool:
    host = parts.hostname or ""
    return host.endswith(".googleapis.com") and not parts.netloc.startswith("[")


def _parse_headers(
    raw: Sequence[Any] | None, path: str, reserved_names: frozenset[str],
    reserved_prefixes: tuple[str, ...],
) -> tuple[Header, ...]:
    if not raw:
        return ()
    seen: dict[str, int] = {}
    headers: list[Header] = []
    total = 0
    for i, item in enumerate(raw):
        item_path = child(path, i)
        if not isinstance(item, Mapping):
            raise InvalidSpec(item_path, "must be an object with name and value")
        name = req_str(item, "name", item_path)
        value = opt_str(item, "value", item_path) or ""
        name_path = child(item_path, "name")
        if not _TOKEN.match(name):
            raise InvalidSpec(name_path, f"{name!r} is not a valid HTTP header name")
        lower = name.lower()
        if lower in reserved_names or lower.startswith(reserved_prefixes):
            raise InvalidSpec(
                name_path,
                f"{name} is set by Google and cannot be set here "
                "(credentials come from target.auth)",
            )
        if lower in seen:
            raise InvalidSpec(name_path, f"{name} repeats {child(path, seen[lower])}.name")
        seen[lower] = i
        if _BAD_VALUE.search(value):
            raise InvalidSpec(child(item_path, "value"), "must not contain control characters")
        total += len(name.encode()) + len(value.encode())
        headers.append(Header(name, value))
    if total >= MAX_HEADER_BYTES:
        raise InvalidSpec(path, f"total {total} bytes; Google allows less than 80 KB")
    return tuple(headers)


def _parse_body(raw: Mapping[str, Any] | None, path: str) -> Body | None:
    if not raw:
        return None
    present = [k for k in ("json", "text", "fromConfigMap", "fromSecret") if raw.get(k) is not None]
    if len(present) > 1:
        raise InvalidSpec(path, f"set at most one of json, text, fromConfigMap, fromSecret, "
                                f"not {', '.join(present)}")
    if not present:
        return None
    key = present[0]
    if key == "json":
        try:
            # Sorted and compact: the API server hands objects back with sorted keys, and
            # a stable serialization keeps the job diff empty when nothing changed.
            text = json.dumps(raw["json"], sort_keys=True, separators=(",", ":"),
                              ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidSpec(child(path, "json"), f"is not serializable JSON: {exc}") from None
        return Body(data=text.encode(), kind="json")
    if key == "text":
        text_value = opt_str(raw, "text", path) or ""
        return Body(data=text_value.encode(), kind="text")
    ref = opt_map(raw, key, path) or {}
    ref_path = child(path, key)
    kind: Literal["ConfigMap", "Secret"] = "ConfigMap" if key == "fromConfigMap" else "Secret"
    return Body(source=BodySource(kind, req_str(ref, "name", ref_path),
                                  req_str(ref, "key", ref_path)))


def _parse_auth(
    raw: Mapping[str, Any] | None, path: str, uri_parts: SplitResult, uri: str
) -> Auth | None:
    if not raw:
        return None
    oauth = opt_map(raw, "oauth", path)
    oidc = opt_map(raw, "oidc", path)
    email = opt_str(raw, "serviceAccountEmail", path)
    if oauth is not None and oidc is not None:
        raise InvalidSpec(child(path, "oidc"), "set at most one of oauth, oidc")
    if email is not None and not (len(email) <= 254 and _EMAIL.match(email)):
        raise InvalidSpec(child(path, "serviceAccountEmail"),
                          f"{email!r} is not a service account email")
    token: OAuthToken | OidcToken
    if oauth is not None:
        if not _is_google_api_host(uri_parts):
            raise InvalidSpec(
                child(path, "oauth"),
                f"is only allowed for hosts ending in .googleapis.com, not {uri_parts.hostname}"
                " (Google sends access tokens to Google APIs only); use oidc",
            )
        scope = opt_str(oauth, "scope", child(path, "oauth")) or DEFAULT_OAUTH_SCOPE
        _check_printable(scope, child(child(path, "oauth"), "scope"))
        token = OAuthToken(scope)
    elif oidc is not None:
        audience = opt_str(oidc, "audience", child(path, "oidc")) or uri
        _check_printable(audience, child(child(path, "oidc"), "audience"))
        token = OidcToken(audience)
    elif email is not None:
        raise InvalidSpec(child(path, "serviceAccountEmail"), "needs oauth or oidc")
    else:
        return None
    return Auth(token, email)


def _check_printable(value: str, field: str) -> None:
    if len(value) > MAX_URI_LENGTH or re.search(r"[\x00-\x1f\x7f]", value):
        raise InvalidSpec(field, "must be at most 2083 printable characters")


def check_request_size(target: Target, body: bytes | None, field: str) -> None:
    """Refuse a request over Google's 1 MB job/task size; call again after resolving
    a ConfigMap or Secret body, whose size parsing cannot know."""
    size = len(target.uri) + sum(len(h.name.encode()) + len(h.value.encode())
                                 for h in target.headers)
    size += len(body) if body is not None else 0
    if size > MAX_REQUEST_BYTES:
        raise InvalidSpec(field, f"the request is {size} bytes; Google allows at most "
                                 f"{MAX_REQUEST_BYTES} (1 MB) with uri and headers")


def parse_target(
    raw: Mapping[str, Any] | None,
    path: str,
    *,
    allow_http: bool,
    extra_reserved_names: frozenset[str] = frozenset(),
    extra_reserved_prefixes: tuple[str, ...] = (),
    templates: bool = False,
) -> Target:
    """Parse and validate `spec.target`; `path` is its JSON path (`spec.target`).

    `extra_reserved_*` (lower case) are header names the calling kind's Google service
    sets itself, refused on top of the shared list.
    """
    if raw is None:
        raise InvalidSpec(path, "is required")
    uri = req_str(raw, "uri", path)
    # Relay renders templates in the uri (api.templates checks each rendering): the raw
    # uri is checked with every template span standing in as one plain character.
    checked = _TEMPLATE_SPAN.sub("t", uri) if templates else uri
    parts = check_uri(checked, child(path, "uri"), allow_http=allow_http)
    method_raw = opt_str(raw, "method", path) or "POST"
    try:
        method = Method(method_raw)
    except ValueError:
        raise InvalidSpec(child(path, "method"), f"{method_raw!r} is not one of "
                          f"{', '.join(m.value for m in Method)}") from None
    headers = _parse_headers(opt_list(raw, "headers", path), child(path, "headers"),
                             _RESERVED_NAMES | extra_reserved_names,
                             _RESERVED_PREFIXES + extra_reserved_prefixes)
    body = _parse_body(opt_map(raw, "body", path), child(path, "body"))
    if body is not None and method not in _BODY_METHODS:
        raise InvalidSpec(child(path, "body"),
                          f"is only allowed with method POST, PUT or PATCH, not {method}")
    auth = _parse_auth(opt_map(raw, "auth", path), child(path, "auth"), parts, checked)
    target = Target(uri, method, headers, body, auth)
    check_request_size(target, body.data if body else None, child(path, "body"))
    return target
