"""Structured logs that carry the request id and never the request's secrets."""

from __future__ import annotations

import json
import logging
import logging.config
import traceback
from contextvars import ContextVar
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


class _NoExceptionMessages(logging.Formatter):
    """Exceptions shown by type and frames, never by message, whoever logs them (uvicorn's
    "Exception in ASGI application" and Celery's task failures included): a driver's error
    message carries the statement and its values."""

    def formatException(self, ei: ExcInfo) -> str:
        parts: list[str] = []
        error, seen = ei[1], set()
        while error is not None and id(error) not in seen:
            seen.add(id(error))
            kind = type(error)
            parts.append(f"{kind.__module__}.{kind.__qualname__}\n")
            parts.extend(traceback.format_tb(error.__traceback__))
            error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
        return "".join(parts).rstrip("\n")


class TextFormatter(_NoExceptionMessages):
    def __init__(self, fmt: str = "") -> None:
        super().__init__(fmt or TEXT_FORMAT)


class JsonFormatter(_NoExceptionMessages):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id:
            entry["request_id"] = request_id
        for field in ("method", "path", "status", "duration_ms", "principal"):
            value = getattr(record, field, None)
            if value is not None:
                entry[field] = value
        if record.exc_info and record.exc_info[0] is not None:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def logging_config(log_format: str, level: str) -> dict[str, Any]:
    """The ``dictConfig`` for the service's logs.

    A dictionary rather than calls, so ``serve`` can hand it to uvicorn, which applies it again
    in every worker process it spawns (a fresh interpreter keeps nothing of the parent's setup).
    """
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {
            "json": {"()": JsonFormatter},
            "text": {"()": TextFormatter, "fmt": TEXT_FORMAT},
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": log_format,
                "filters": ["request_id"],
            }
        },
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": {
            # uvicorn's access log repeats what the request middleware logs, with the raw
            # query string; its other loggers go to the root handler like everything else.
            "uvicorn.access": {"handlers": [], "propagate": False, "level": "WARNING"},
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            # httpx logs each request's whole URL at info: a webhook's URL may carry its
            # receiver's secret token (chat services put it in the path).
            "httpx": {"level": "WARNING"},
            "httpcore": {"level": "WARNING"},
        },
    }


def configure_logging(log_format: str, level: str) -> None:
    logging.config.dictConfig(logging_config(log_format, level))
