"""Where a Relay-delivery job or task sends its request: the relay, naming the object.

Why here: the mappers place a `RelayTarget` without knowing where it comes from; the relay
URL is an operator setting, and the body names the object (apiVersion, kind, namespace,
name, uid) and nothing else, since the relay trusts nothing else a caller sends. Without a
usable relay URL, Relay objects are refused with `RelayNotConfigured` (the operator itself
runs on: Direct objects do not need one).
"""

from __future__ import annotations

from gcpcall.api.common import Delivery, RelayTarget
from gcpcall.api.errors import InvalidSpec
from gcpcall.api.relay_envelope import envelope_body
from gcpcall.api.target import check_uri
from gcpcall.config import Settings
from gcpcall.kube import ObjectRef

__all__ = ["RelayUnavailable", "relay_target", "relay_url_problem"]


class RelayUnavailable(Exception):
    """This operator has no relay URL it can use; the message says what to set."""


def relay_url_problem(url: str | None, *, allow_http: bool = False) -> str | None:
    """Why `url` cannot be the relay's public URL; None when it can."""
    if not url:
        return ("delivery: Relay needs the operator's relay URL (Helm relay.url, "
                "GCPCALL_RELAY_URL); this operator has none")
    try:
        check_uri(url, "GCPCALL_RELAY_URL", allow_http=allow_http)
    except InvalidSpec as e:
        return f"the operator's relay URL cannot be used: {e.field} {e.message}"
    return None


def relay_target(delivery: Delivery, settings: Settings, ref: ObjectRef) -> RelayTarget | None:
    """None for Direct delivery; the relay's URL and envelope for Relay."""
    if delivery is not Delivery.RELAY:
        return None
    url = settings.relay_url
    problem = relay_url_problem(url, allow_http=settings.endpoints.allow_http_targets)
    if problem is not None or url is None:
        raise RelayUnavailable(problem)
    return RelayTarget(url=url, body=envelope_body(ref.kind, ref.namespace, ref.name, ref.uid),
                       audience=url)
