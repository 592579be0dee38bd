"""The target block: where a Google-minted token may go, and what Google would refuse."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from gcpcall.api.errors import InvalidSpec
from gcpcall.api.gcp_task import parse_gcp_task
from gcpcall.api.scheduled_call import parse_scheduled_call
from gcpcall.api.target import (
    DEFAULT_OAUTH_SCOPE,
    Body,
    BodySource,
    Method,
    OAuthToken,
    OidcToken,
    check_request_size,
)
from tests.unit._specs import COMPUTE_URI, DEFAULTS, call_spec, task_spec, with_target


def invalid_field(spec: dict[str, Any], **ctx: Any) -> str:
    with pytest.raises(InvalidSpec) as info:
        parse_scheduled_call(spec, replace(DEFAULTS, **ctx))
    assert info.value.message  # every refusal says why
    assert str(info.value).startswith(info.value.field + ": ")
    return info.value.field


def test_valid_target_parses_with_defaults_applied() -> None:
    spec = with_target(call_spec(), method=None, auth={"oauth": {}})
    target = parse_scheduled_call(spec, DEFAULTS).target
    assert target.uri == COMPUTE_URI
    assert target.method is Method.POST
    assert [(h.name, h.value) for h in target.headers] == [("Content-Type", "application/json")]
    assert target.auth is not None
    assert target.auth.token == OAuthToken(DEFAULT_OAUTH_SCOPE)
    assert target.auth.service_account_email is None
    assert target.host == "compute.googleapis.com"


def test_json_body_is_serialized_compact_with_sorted_keys() -> None:
    target = parse_scheduled_call(call_spec(), DEFAULTS).target
    assert target.body == Body(data=b'{"a":[1,2],"b":1}', kind="json")
    assert json.loads(target.body.data or b"") == {"a": [1, 2], "b": 1}


def test_text_and_reference_bodies() -> None:
    text = parse_scheduled_call(with_target(call_spec(), body={"text": "héllo"}), DEFAULTS)
    assert text.target.body == Body(data="héllo".encode(), kind="text")
    cm = parse_scheduled_call(
        with_target(call_spec(), body={"fromConfigMap": {"name": "cfg", "key": "body.json"}}),
        DEFAULTS)
    assert cm.target.body == Body(source=BodySource("ConfigMap", "cfg", "body.json"))
    secret = parse_scheduled_call(
        with_target(call_spec(), body={"fromSecret": {"name": "s", "key": "k"}}), DEFAULTS)
    assert secret.target.body == Body(source=BodySource("Secret", "s", "k"))
    empty = parse_scheduled_call(with_target(call_spec(), body={}), DEFAULTS)
    assert empty.target.body is None


def test_oidc_audience_defaults_to_the_uri() -> None:
    spec = with_target(call_spec(), uri="https://svc-abc.run.app/hook", auth={"oidc": {}})
    auth = parse_scheduled_call(spec, DEFAULTS).target.auth
    assert auth is not None
    assert auth.token == OidcToken("https://svc-abc.run.app/hook")
    spec = with_target(spec, auth={"oidc": {"audience": "aud"}, "serviceAccountEmail": "a@b.co"})
    auth = parse_scheduled_call(spec, DEFAULTS).target.auth
    assert auth is not None
    assert auth.token == OidcToken("aud")
    assert auth.service_account_email == "a@b.co"


@pytest.mark.parametrize(
    "uri",
    [
        "http://compute.googleapis.com/x",
        "ftp://compute.googleapis.com/x",
        "https:/compute.googleapis.com/x",
        "//compute.googleapis.com/x",
        "https:///no-host",
        "https://user:pw@compute.googleapis.com/x",
        "https://compute.googleapis.com\\@evil.example/x",
        "https://exa mple.com/x",
        "https://bücher.example/x",
        "https://example.com:99999/x",
        "https://example.com:port/x",
        "https://example.com:0/x",
        "https://exa_mple.com/x",
        "https://-bad.example.com/x",
        "https://[::1/x",
        "https://example.com/" + "a" * 2070,
    ],
)
def test_bad_uris_are_refused(uri: str) -> None:
    assert invalid_field(with_target(call_spec(), uri=uri, auth={"oidc": {}})) == (
        "spec.target.uri")


def test_uri_at_the_length_limit_passes() -> None:
    uri = "https://example.com/" + "a" * (2083 - len("https://example.com/"))
    target = parse_scheduled_call(with_target(call_spec(), uri=uri, auth=None), DEFAULTS).target
    assert len(target.uri) == 2083


def test_http_only_against_an_emulator() -> None:
    spec = with_target(call_spec(), uri="http://127.0.0.1:8089/compute", auth={"oidc": {}})
    assert invalid_field(spec) == "spec.target.uri"
    target = parse_scheduled_call(spec, replace(DEFAULTS, allow_http=True)).target
    assert target.uri == "http://127.0.0.1:8089/compute"


@pytest.mark.parametrize(
    "uri",
    [
        "https://evil.example/x",
        "https://googleapis.com/x",
        "https://evil.example#.googleapis.com",
        "https://evil.example/?h=x.googleapis.com",
        "https://compute.googleapis.com.evil.example/x",
        "https://evil.example/.googleapis.com",
        "https://[::1]/x.googleapis.com",
        "https://sub.googleapis.com.example/x",
    ],
)
def test_oauth_only_for_googleapis_hosts(uri: str) -> None:
    assert invalid_field(with_target(call_spec(), uri=uri)) == "spec.target.auth.oauth"


@pytest.mark.parametrize(
    "uri",
    [
        "https://compute.googleapis.com@evil.example/x",  # userinfo trick
        "https://evil.example:443.googleapis.com/x",  # port trick
        "https://evil.example\\.googleapis.com/x",  # backslash trick
    ],
)
def test_oauth_host_tricks_fail_on_the_uri_itself(uri: str) -> None:
    assert invalid_field(with_target(call_spec(), uri=uri)) == "spec.target.uri"


@pytest.mark.parametrize(
    "uri", ["https://COMPUTE.GoogleAPIs.com/x", "https://compute.googleapis.com:443/x"]
)
def test_oauth_accepts_googleapis_hosts_however_written(uri: str) -> None:
    target = parse_scheduled_call(with_target(call_spec(), uri=uri), DEFAULTS).target
    assert target.auth is not None
    assert isinstance(target.auth.token, OAuthToken)


@pytest.mark.parametrize("method", ["GET", "DELETE", "HEAD", "OPTIONS"])
def test_body_only_with_post_put_patch(method: str) -> None:
    assert invalid_field(with_target(call_spec(), method=method)) == "spec.target.body"


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
def test_body_methods(method: str) -> None:
    target = parse_scheduled_call(with_target(call_spec(), method=method), DEFAULTS).target
    assert target.method == method
    assert target.body is not None


def test_unknown_method() -> None:
    assert invalid_field(with_target(call_spec(), method="FETCH")) == "spec.target.method"


def test_one_body_kind_only() -> None:
    spec = with_target(call_spec(), body={"json": {"a": 1}, "text": "x"})
    assert invalid_field(spec) == "spec.target.body"


def test_reference_body_needs_name_and_key() -> None:
    spec = with_target(call_spec(), body={"fromSecret": {"name": "s"}})
    assert invalid_field(spec) == "spec.target.body.fromSecret.key"


@pytest.mark.parametrize(
    "name",
    ["Authorization", "authorization", "Host", "Content-Length", "X-Google-Foo",
     "x-goog-not-reserved-but-fine", "X-AppEngine-Country", "X-CloudScheduler",
     "x-cloudscheduler-jobname"],
)
def test_reserved_header_names(name: str) -> None:
    headers = [{"name": "Accept", "value": "*/*"}, {"name": name, "value": "v"}]
    spec = with_target(call_spec(), headers=headers)
    if name == "x-goog-not-reserved-but-fine":
        assert parse_scheduled_call(spec, DEFAULTS).target.headers[1].name == name
    else:
        assert invalid_field(spec) == "spec.target.headers[1].name"


@pytest.mark.parametrize("name", ["Bad Header", "x:y", "tab\there", "é", ""])
def test_invalid_header_names(name: str) -> None:
    spec = with_target(call_spec(), headers=[{"name": name, "value": "v"}])
    assert invalid_field(spec) == "spec.target.headers[0].name"


@pytest.mark.parametrize("value", ["a\nb", "a\rb", "a\x00b", "a\x7fb"])
def test_invalid_header_values(value: str) -> None:
    spec = with_target(call_spec(), headers=[{"name": "X-Ok", "value": value}])
    assert invalid_field(spec) == "spec.target.headers[0].value"


def test_duplicate_header_names_ignoring_case() -> None:
    headers = [{"name": "X-Team", "value": "a"}, {"name": "x-team", "value": "b"}]
    assert invalid_field(with_target(call_spec(), headers=headers)) == (
        "spec.target.headers[1].name")


def test_headers_must_be_a_list_of_objects() -> None:
    assert invalid_field(with_target(call_spec(), headers="X: y")) == "spec.target.headers"
    assert invalid_field(with_target(call_spec(), headers=["X: y"])) == (
        "spec.target.headers[0]")


def test_headers_total_under_80_kb() -> None:
    headers = [{"name": f"X-H{i}", "value": "v" * 8000} for i in range(11)]
    assert invalid_field(with_target(call_spec(), headers=headers)) == "spec.target.headers"


def test_request_at_most_1_mb_with_the_json_body_serialized() -> None:
    big = {"data": "x" * (1024 * 1024)}
    assert invalid_field(with_target(call_spec(), body={"json": big})) == "spec.target.body"
    fits = {"data": "x" * (1024 * 1024 - 2000)}
    assert parse_scheduled_call(with_target(call_spec(), body={"json": fits}), DEFAULTS)


def test_request_size_recheck_for_a_resolved_reference_body() -> None:
    spec = with_target(call_spec(), body={"fromConfigMap": {"name": "c", "key": "k"}})
    target = parse_scheduled_call(spec, DEFAULTS).target
    check_request_size(target, b"x" * 1000, "spec.target.body.fromConfigMap")
    with pytest.raises(InvalidSpec) as info:
        check_request_size(target, b"x" * (1024 * 1024), "spec.target.body.fromConfigMap")
    assert info.value.field == "spec.target.body.fromConfigMap"


def test_auth_rules() -> None:
    both = with_target(call_spec(), auth={"oauth": {}, "oidc": {}})
    assert invalid_field(both) == "spec.target.auth.oidc"
    email_only = with_target(call_spec(), auth={"serviceAccountEmail": "a@b.co"})
    assert invalid_field(email_only) == "spec.target.auth.serviceAccountEmail"
    bad_email = with_target(call_spec(), auth={"oauth": {}, "serviceAccountEmail": "nope"})
    assert invalid_field(bad_email) == "spec.target.auth.serviceAccountEmail"
    bad_scope = with_target(call_spec(), auth={"oauth": {"scope": "a\nb"}})
    assert invalid_field(bad_scope) == "spec.target.auth.oauth.scope"
    empty = parse_scheduled_call(with_target(call_spec(), auth={}), DEFAULTS)
    assert empty.target.auth is None


def test_target_and_uri_are_required_and_typed() -> None:
    spec = call_spec()
    del spec["target"]
    assert invalid_field(spec) == "spec.target"
    assert invalid_field(with_target(call_spec(), uri=None)) == "spec.target.uri"
    assert invalid_field(with_target(call_spec(), uri=42)) == "spec.target.uri"
    assert invalid_field(call_spec(target="https://x")) == "spec.target"


def test_user_agent_is_refused_for_both_kinds() -> None:
    """Cloud Scheduler and Cloud Tasks both replace it ("Google-Cloud-Scheduler",
    "Google-Cloud-Tasks"): a value would be drift forever, or dropped without a word."""
    headers = [{"name": "user-agent", "value": "my-agent"}]
    assert invalid_field(with_target(call_spec(), headers=headers)) == (
        "spec.target.headers[0].name")
    with pytest.raises(InvalidSpec) as info:
        parse_gcp_task(with_target(task_spec(), headers=headers), DEFAULTS)
    assert info.value.field == "spec.target.headers[0].name"


def test_cloud_tasks_headers_are_reserved_for_tasks() -> None:
    spec = with_target(task_spec(), headers=[{"name": "X-CloudTasks-TaskName", "value": "x"}])
    with pytest.raises(InvalidSpec) as info:
        parse_gcp_task(spec, DEFAULTS)
    assert info.value.field == "spec.target.headers[0].name"
