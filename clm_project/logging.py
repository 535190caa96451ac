"""JSON log lines (LOG_FORMAT=json): one object per event, with job_id and model_id when known.

The ids come from the record itself (`extra=` or a LoggerAdapter) or, failing that, from the
`log_context` the line was emitted in: the pipeline binds job_id, model_id and step around each
step, so every line logged during a job (by any module) carries them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

CONTEXT_FIELDS = ("job_id", "model_id", "version", "candidate_id", "run_id", "task_id", "step")

_context: ContextVar[dict[str, str] | None] = ContextVar("clm_log_context", default=None)


@contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """Lines logged inside carry these fields (None values are left out), nested contexts merge."""
    bound = {name: str(value) for name, value in fields.items() if value is not None}
    token = _context.set({**(_context.get() or {}), **bound})
    try:
        yield
    finally:
        _context.reset(token)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        context = _context.get() or {}
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is None:
                value = context.get(name)
            if value is not None:
                entry[name] = str(value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)
