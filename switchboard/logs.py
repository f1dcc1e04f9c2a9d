"""Log set-up shared by every service: text lines for people, JSON lines for log collectors.

Records carry ``client_id``, ``user`` and ``topic`` where they apply, from two places: a call's
``extra={...}`` (what the record is about) and :func:`bind` (who the current task serves: the broker
binds a connection's client id and user once it has accepted the CONNECT). ``extra`` wins.

``log.format: json`` (``SWITCHBOARD_LOG__FORMAT=json``) prints one object per line::

    {"time": "2026-11-22T10:00:00.123Z", "level": "WARNING", "logger": "broker.access",
     "message": "denied publish: ...", "client_id": "phone-1", "user": "alice", "topic": "dm/bob/alice"}
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal

#: The fields a record may carry about the client it concerns, in the order they are printed.
CONTEXT_FIELDS = ("client_id", "user", "topic", "peer")

#: Libraries whose INFO lines are noise for an operator; shown at DEBUG only.
NOISY_LOGGERS = ("amqtt", "transitions", "uvicorn.error", "alembic")

_context: ContextVar[dict[str, str] | None] = ContextVar("switchboard_log_context", default=None)


def bind(**fields: str | None) -> None:
    """Attach fields to every record logged from now on in this task (and tasks it starts)."""
    merged = dict(_context.get() or {})
    merged.update({key: value for key, value in fields.items() if value is not None})
    _context.set(merged)


class ContextFilter(logging.Filter):
    """Copies the bound fields onto a record unless the call gave its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_context.get() or {}).items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message [client_id=... user=... topic=...]``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = " ".join(f"{key}={getattr(record, key)}" for key in CONTEXT_FIELDS if _present(record, key))
        if not fields:
            return line
        first, newline, rest = line.partition("\n")  # keep a traceback below the fields
        return f"{first} [{fields}]{newline}{rest}"


class JsonFormatter(logging.Formatter):
    """One JSON object per record; tracebacks in ``exception``, never across several lines."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in CONTEXT_FIELDS:
            if _present(record, key):
                entry[key] = str(getattr(record, key))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False)


class _Announcer:
    """Status lines on stdout (``switchboard: ready``), printed whatever the level, in the log format;
    ``warn=True`` for a notice to the operator on stderr (``switchboard: using a new, empty database ...``)."""

    json = False

    def __call__(self, line: str, *, warn: bool = False) -> None:
        stream = sys.stderr if warn else sys.stdout
        if self.json:
            level = logging.WARNING if warn else logging.INFO
            record = logging.LogRecord("switchboard", level, "", 0, line, None, None)
            print(JsonFormatter().format(record), file=stream, flush=True)
        else:
            print(f"switchboard: {line}", file=stream, flush=True)


#: ``announce("ready")`` prints a status line people and scripts wait for.
announce = _Announcer()


def configure_logging(level: str, log_format: Literal["text", "json"] = "text") -> None:
    """Send every logger's records to stderr in the chosen format; replaces any earlier set-up."""
    announce.json = log_format == "json"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    quiet = logging.DEBUG if level == "DEBUG" else logging.WARNING
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(quiet)


def _present(record: logging.LogRecord, key: str) -> bool:
    return getattr(record, key, None) is not None
