"""Development sender: prints each message, code included, to the terminal."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from otpservice.sms import OutboundSms


class ConsoleSender:
    """Prints messages instead of sending them. Development and benchmarks only."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stdout

    async def send(self, message: OutboundSms) -> None:
        """Print the message, unbuffered, so a developer sees the code at once."""
        print(
            f"[sms to {message.to}] challenge={message.challenge_id} {message.body}",
            file=self._stream,
            flush=True,
        )
