"""Structured JSON logs with a request id, and nothing that could be PHI.

Log lines carry ids, sizes, durations, hashes and outcomes only. Callers pass fields explicitly through
``event()``; there is deliberately no helper that formats free text from a request into a message.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

# Third-party loggers that could echo request content (PyRuSH logs whole documents at debug level via loguru;
# uvicorn's access log prints raw paths and queries): keep them quiet.
_QUIET = {"faster_whisper": logging.WARNING, "uvicorn.access": logging.CRITICAL, "httpx": logging.WARNING}


def _no_websocket_paths(record: logging.LogRecord) -> bool:
    """uvicorn's WebSocket layer logs every upgrade with its raw path and query at INFO ("WebSocket
    /v1/realtime?patient=..."), past the disabled access log: dropped. The service logs one line per stream with the
    route template (service/api/middleware.py)."""
    return '"WebSocket %s"' not in str(record.msg)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
        }
        rid = request_id.get()
        if rid:
            entry["request_id"] = rid
        fields = getattr(record, "fields", None)
        if fields:
            entry.update(fields)
        if record.exc_info and record.exc_info[0] is not None:
            # The exception type only: messages and tracebacks can quote request content.
            entry["exc_type"] = record.exc_info[0].__name__
        return json.dumps(entry, default=str)


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name, quiet_level in _QUIET.items():
        logging.getLogger(name).setLevel(quiet_level)
    uvicorn_error = logging.getLogger("uvicorn.error")
    if _no_websocket_paths not in uvicorn_error.filters:
        uvicorn_error.addFilter(_no_websocket_paths)
    try:  # loguru is pulled in by PyRuSH (medspaCy); it must never print document text.
        from loguru import logger as loguru_logger

        loguru_logger.remove()
    except ImportError:
        pass


def event(logger: logging.Logger, name: str, level: int = logging.INFO, **fields: object) -> None:
    logger.log(level, name, extra={"fields": fields})
