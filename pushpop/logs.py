"""Logging for the ``pushpop worker`` command: readable lines, or one JSON object per line."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

# Fields the worker attaches to its per-message lines (see worker_common.message_fields);
# trace_id only while OpenTelemetry traces the handler.
FIELDS = ("message_id", "topic", "attempt", "duration_ms", "outcome", "trace_id")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with the per-message fields as keys of their own."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update({key: getattr(record, key) for key in FIELDS if hasattr(record, key)})
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def configure(level: str, style: str) -> None:
    """Sends pushpop's logs to stderr at ``level``, as ``text`` or ``json``."""
    handler = logging.StreamHandler(sys.stderr)
    if style == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("pushpop")
    logger.addHandler(handler)
    logger.setLevel(level)
