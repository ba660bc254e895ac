"""Logging set-up: one line per event, phone numbers masked wherever they appear."""

from __future__ import annotations

import logging
from typing import Any

from otpservice.phone import mask_numbers


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


def configure_logging(level: str) -> None:
    """Log to stderr at ``level``, masking numbers in every handler's records."""
    # The line format uses none of these, and collecting them is most of the cost of a record
    # (a stack walk for the caller, a getpid system call): see "Optimization" in the logging
    # HOWTO of the Python docs.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler()
    handler.setFormatter(MaskingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
