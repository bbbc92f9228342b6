"""Logs of long-lived processes (``worker``, ``serve``): ``--log-level`` and
``--log-format text|json``.

JSON is one object per line -- ``time``, ``level``, ``logger``, ``message`` and the
record's structured fields (:data:`FIELDS`: a handled event's workflow id, event,
participant, step, outcome and duration) -- for a log pipeline to index. In either
format a message goes through :func:`~agent_coordinator.core.model_errors.redact_secrets`
first: a provider's error quoting a key never reaches a log line.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from agent_coordinator.core.model_errors import redact_secrets

__all__ = ["FIELDS", "JsonFormatter", "configure_logging"]

#: Structured fields a record may carry (``extra=``), copied into JSON lines.
FIELDS = ("workflow_id", "event", "participant", "step", "outcome", "status", "duration_ms", "run")

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact_secrets(record.getMessage()),
        }
        for field in FIELDS:
            if hasattr(record, field):
                payload[field] = getattr(record, field)
        if record.exc_info:
            payload["error"] = redact_secrets(self.formatException(record.exc_info))
        return json.dumps(payload, default=str)


class _RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact_secrets(super().format(record))


def configure_logging(level: str = "warning", fmt: str = "text") -> None:
    """Log records of ``level`` and above to stderr, as text or JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(_RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
