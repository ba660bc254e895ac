"""``python -m otpservice`` and the ``otpservice`` entry point: the command line in ``cli``."""

from __future__ import annotations

import sys

from otpservice.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
