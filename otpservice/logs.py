"""Logging set-up: one line per event, phone numbers masked wherever they appear."""

from __future__ import annotations

import logging

from otpservice.phone import mask_numbers


class MaskNumbersFilter(logging.Filter):
    """Rewrites each record's message so no phone number reaches a log in clear."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Mask numbers in the formatted message (arguments included)."""
        message = record.getMessage()
        masked = mask_numbers(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


def configure_logging(level: str) -> None:
    """Log to stderr at ``level``, masking numbers in every handler's records."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(MaskNumbersFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
