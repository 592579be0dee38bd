"""The HTTP request Google will send, after defaults, body resolution and relay routing.

Why: Cloud Scheduler's `HttpTarget` and Cloud Tasks' `HttpRequest` differ only in field
names, so both mappers place the same resolved request; what gets sent where, and whose
token rides along, is decided here once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gcpcall.api.common import RelayTarget
from gcpcall.api.errors import InvalidSpec
from gcpcall.api.target import Method, OAuthToken, Target

__all__ = ["ResolvedRequest", "resolve_request"]


@dataclass(frozen=True)
class ResolvedRequest:
    uri: str
    method: Method
    headers: dict[str, str]
    body: bytes | None
    auth_kind: Literal["oauth", "oidc"] | None
    service_account_email: str | None
    scope: str = ""  # oauth
    audience: str = ""  # oidc


def resolve_request(
    target: Target,
    identity_email: str | None,
    *,
    body: bytes | None = None,
    relay: RelayTarget | None = None,
    path: str = "spec.target",
) -> ResolvedRequest:
    """`body` is the resolved ConfigMap/Secret value (required when the spec has one).

    With `relay`, the request goes to the relay with an ID token for the identity's own
    service account: the relay then checks that token and makes the real call.
    """
    if relay is not None:
        if not identity_email:
            raise InvalidSpec("spec.serviceAccountName", "delivery: Relay needs an identity "
                              "with a Google service account (the relay checks its token)")
        return ResolvedRequest(
            uri=relay.url, method=Method.POST, headers={"Content-Type": relay.content_type},
            body=relay.body, auth_kind="oidc", service_account_email=identity_email,
            audience=relay.audience or relay.url,
        )
    data: bytes | None = None
    if target.body is not None:
        if target.body.source is not None:
            if body is None:
                raise ValueError("the body comes from a ConfigMap/Secret: resolve it first")
            data = body
        else:
            data = target.body.data
    headers = {h.name: h.value for h in target.headers}
    if target.auth is None:
        return ResolvedRequest(target.uri, target.method, headers, data, None, None)
    email = target.auth.service_account_email or identity_email
    if not email:
        raise InvalidSpec(f"{path}.auth.serviceAccountEmail",
                          "no service account for the token: set it, or use an identity "
                          "with a Google service account")
    token = target.auth.token
    if isinstance(token, OAuthToken):
        return ResolvedRequest(target.uri, target.method, headers, data, "oauth", email,
                               scope=token.scope)
    return ResolvedRequest(target.uri, target.method, headers, data, "oidc", email,
                           audience=token.audience)
