"""The body a Relay job or task sends to the relay: which object, and nothing else.

Why so little: the relay is a public endpoint, and whoever holds a Google-signed ID token
with the relay's audience can send it anything. It trusts only the token's email (checked
against the object's identity) and the object this body names (checked against the API
server by uid); what to call comes from that object's spec, never from the request. The
parser refuses anything but exactly these five short strings.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["MAX_ENVELOPE_BYTES", "Envelope", "EnvelopeError", "envelope_body", "parse_envelope"]

MAX_ENVELOPE_BYTES = 4096
API_VERSION = "gcpcall.dev/v1alpha1"
KINDS = {"ScheduledGcpCall": "scheduledgcpcalls", "GcpTask": "gcptasks"}
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_UID = re.compile(r"^[0-9a-fA-F-]{1,64}$")
_KEYS = ("apiVersion", "kind", "namespace", "name", "uid")


class EnvelopeError(ValueError):
    """The body is not a relay envelope (the message says why, for the relay's log)."""


@dataclass(frozen=True)
class Envelope:
    kind: str
    namespace: str
    name: str
    uid: str

    @property
    def plural(self) -> str:
        return KINDS[self.kind]


def envelope_body(kind: str, namespace: str, name: str, uid: str) -> bytes:
    """The bytes a Relay job or task carries (sorted, compact: stable for the drift check)."""
    doc = {"apiVersion": API_VERSION, "kind": kind, "namespace": namespace, "name": name,
           "uid": uid}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def parse_envelope(raw: bytes) -> Envelope:
    if len(raw) > MAX_ENVELOPE_BYTES:
        raise EnvelopeError(f"body of {len(raw)} bytes; an envelope is at most "
                            f"{MAX_ENVELOPE_BYTES}")
    try:
        doc: Any = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise EnvelopeError("body is not JSON") from None
    if not isinstance(doc, dict) or sorted(doc) != sorted(_KEYS):
        raise EnvelopeError(f"body must be an object with exactly {', '.join(_KEYS)}")
    if not all(isinstance(doc[k], str) for k in _KEYS):
        raise EnvelopeError("every field of the envelope must be a string")
    if doc["apiVersion"] != API_VERSION or doc["kind"] not in KINDS:
        raise EnvelopeError("apiVersion/kind name no kind of this operator")
    if not _DNS_LABEL.match(doc["namespace"]) or not _DNS_SUBDOMAIN.match(doc["name"]):
        raise EnvelopeError("namespace or name is not a Kubernetes name")
    if not _UID.match(doc["uid"]):
        raise EnvelopeError("uid is not a Kubernetes uid")
    return Envelope(doc["kind"], doc["namespace"], doc["name"], doc["uid"])
