"""Process-wide logging setup: JSON lines for log shippers, or plain text for a terminal.

Structured fields are passed with ``logger.info("msg", extra={"room": r})`` and appear as
top-level keys of the JSON object.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

LEVELS = ("debug", "info", "warning", "error", "critical")

# Attributes every LogRecord has; anything else on a record came in through `extra`.
_RESERVED = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, then any extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # default=str: a stray object in `extra` must not make the log line vanish.
        return json.dumps(entry, default=str, ensure_ascii=False)


class _SfuHandler(logging.StreamHandler):
    """Marker type so repeated setup replaces our handler instead of stacking duplicates."""


def setup_logging(level: str, json_logs: bool) -> None:
    """Route all logging to stderr at ``level``; raises ValueError for an unknown level."""
    name = level.lower()
    if name not in LEVELS:
        raise ValueError(f"unknown log level {level!r} (valid: {', '.join(LEVELS)})")
    handler = _SfuHandler(sys.stderr)
    if json_logs:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _SfuHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(name.upper())
