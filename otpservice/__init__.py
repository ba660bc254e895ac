"""otpservice: issue and verify SMS one-time codes, safely, on Redis."""

from __future__ import annotations

__version__ = "0.1.0"
