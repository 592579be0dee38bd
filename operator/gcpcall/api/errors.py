"""The one exception the api/ layer raises: `InvalidSpec`.

Why one type: the reconcilers turn it into `Ready=False, reason=InvalidSpec` with a message
that names the offending field, and they must never call Google for such a spec. A single
exception with a JSON-path `field` makes that mapping one `except` clause, and lets tests
assert on the field rather than on message wording.
"""

from __future__ import annotations

__all__ = ["InvalidSpec"]


class InvalidSpec(ValueError):
    """A spec the CRD schema accepted but Google (or this operator) would refuse.

    `field` is a JSON path such as `spec.target.headers[1].name`; `message` says what is
    wrong with it in words a user can act on.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def __reduce__(self) -> tuple[type[InvalidSpec], tuple[str, str]]:
        # Keeps the exception picklable (kopf and multiprocessing copy exceptions around).
        return (InvalidSpec, (self.field, self.message))
