"""Logging setup: our lines and kopf's, with routine watch events kept out of INFO.

Why: kopf logs "Handler '...' succeeded." at INFO for every handler call, and the handler
that follows every watch event (deletions, operations) runs for every event of every
object; at INFO that drowned the lines that matter. Those lines are lowered to DEBUG here;
every other line keeps its level.
"""

from __future__ import annotations

import logging

__all__ = ["ROUTINE_HANDLERS", "RoutineEvents", "setup_logging"]

# Handlers that run on every watch event (handlers/*.py): their success is routine.
ROUTINE_HANDLERS = ("watch_events",)


class RoutineEvents(logging.Filter):
    """Lowers kopf's "Handler 'watch_events' succeeded." to DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and record.name.startswith("kopf"):
            message = record.getMessage()
            if message.endswith("succeeded.") and any(
                f"'{name}'" in message for name in ROUTINE_HANDLERS
            ):
                record.levelno, record.levelname = logging.DEBUG, "DEBUG"
                return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


def setup_logging(verbose: bool) -> None:
    """Configure the root logger once, at process start."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(RoutineEvents())
