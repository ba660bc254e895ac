"""Development sender: prints each message, code included, to the terminal."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, TextIO

from otpservice.sms.outcomes import SendReceipt

if TYPE_CHECKING:
    from otpservice.sms.outcomes import OutboundSms


class ConsoleSender:
    """Prints messages instead of sending them. Development, tests and benchmarks only."""

    deduplicates = False

    def __init__(self, stream: TextIO | None = None, *, name: str = "console") -> None:
        self.name = name
        self._stream = stream or sys.stdout

    async def send(self, message: OutboundSms) -> SendReceipt:
        """Print the message, unbuffered, so a developer sees the code at once."""
        print(
            f"[sms to {message.to}] challenge={message.challenge_id} {message.body}",
            file=self._stream,
            flush=True,
        )
        return SendReceipt(provider=self.name, message_id=None)
