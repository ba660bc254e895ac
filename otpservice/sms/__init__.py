"""Sending SMS: the one seam with several implementations (console now; real providers later)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import msgspec

from otpservice.sms.console import ConsoleSender

if TYPE_CHECKING:
    from otpservice.settings import SmsSettings


class OutboundSms(msgspec.Struct, frozen=True, kw_only=True):
    """One message to send. ``body`` holds the code: it is never logged or repr'd."""

    to: str
    body: str
    challenge_id: str

    def __repr__(self) -> str:
        return f"OutboundSms(challenge_id={self.challenge_id!r}, body=<redacted>)"


class SmsSender(Protocol):
    """Hands a message to an SMS provider."""

    async def send(self, message: OutboundSms) -> None:
        """Send ``message``; raise ``SenderUnavailable`` when it could not be handed over."""
        ...


def build_sender(settings: SmsSettings) -> SmsSender:
    """The sender the settings name."""
    if settings.provider == "console":
        return ConsoleSender()
    raise AssertionError(f"unknown provider {settings.provider!r}")  # pragma: no cover


__all__ = ["ConsoleSender", "OutboundSms", "SmsSender", "build_sender"]
