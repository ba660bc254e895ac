"""Logging set-up: one line per event (JSON, or text for people), phone numbers masked
wherever they appear, and the id of the request being served on each line."""

from __future__ import annotations

import contextvars
import logging
import secrets
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from otpservice.phone import mask_numbers

if TYPE_CHECKING:
    from collections.abc import Iterable

# The id of the request this task serves: from its X-Request-ID header, else a new one.
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
REQUEST_ID_HEADER = b"x-request-id"


class MaskingFormatter(logging.Formatter):
    """Masks numbers in each message, exception text and stack (not in the timestamp)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        """The message (its arguments included), masked."""
        record.message = mask_numbers(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:
        """A traceback, masked: exception texts can carry numbers."""
        return mask_numbers(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        """A stack, masked."""
        return mask_numbers(super().formatStack(stack_info))


# msgspec's encoder: a tenth of json.dumps's time, on a line every request writes.
_JSON = msgspec.json.Encoder()


class JsonFormatter(MaskingFormatter):
    """One JSON object per line: time, level, logger, message, request id, exception."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line, numbers masked."""
        record.message = record.getMessage()
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": mask_numbers(record.message),
        }
        request_id = REQUEST_ID.get()
        if request_id:
            line["request_id"] = request_id
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return _JSON.encode(line).decode()


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get() or "-"
        return True


def request_id_from(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The request's ``X-Request-ID`` if it is a sane one, else a new id."""
    for name, value in headers:
        if name == REQUEST_ID_HEADER:
            given = value.decode("latin-1")
            if 0 < len(given) <= 64 and given.isprintable():
                return given
            break
    return secrets.token_hex(8)


def configure_logging(level: str, log_format: str = "json") -> None:
    """Log to stderr at ``level`` as JSON lines (or ``"text"``), masking numbers in every
    handler's records."""
    # The line format uses none of these, and collecting them is most of the cost of a record
    # (a stack walk for the caller, a getpid system call): see "Optimization" in the logging
    # HOWTO of the Python docs.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.addFilter(_RequestIdFilter())
        handler.setFormatter(
            MaskingFormatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
