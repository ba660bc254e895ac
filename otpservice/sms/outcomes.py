"""What goes to a provider, and what can come back: a receipt, or one of three failures.

The three failures decide what a retry may do, so that no phone ever gets a code twice:

- ``Rejected``: the provider refused this message for good (invalid or unsubscribed number).
  Neither a retry nor another provider would help.
- ``NotAccepted``: the provider certainly did not take the message (connection refused, 429,
  5xx, credentials refused). Safe to retry later or to try the next provider.
- ``OutcomeUnknown``: the request may have been taken (a timeout after it was sent). Only a
  provider that drops duplicates (ACS repeatability) may be asked again.
"""

from __future__ import annotations

import msgspec


class OutboundSms(msgspec.Struct, frozen=True, kw_only=True):
    """One message to send. ``body`` holds the code: it is never logged or repr'd."""

    to: str
    body: str
    # "" for a message that belongs to no challenge (an answer to STOP, START or HELP).
    challenge_id: str
    # A UUID, stable across every attempt at this message: the provider's idempotency key.
    send_id: str
    # When the first attempt was made (Unix seconds); ACS wants it with every repeat.
    first_attempt_at: float

    def __repr__(self) -> str:
        return f"OutboundSms(challenge_id={self.challenge_id!r}, body=<redacted>)"


class SendReceipt(msgspec.Struct, frozen=True, kw_only=True):
    """A provider took the message."""

    provider: str
    message_id: str | None


class SendFailure(Exception):
    """A provider did not take the message. ``reason`` is a stable word for logs and metrics."""

    def __init__(self, provider: str, reason: str, detail: str) -> None:
        super().__init__(f"{provider}: {reason}: {detail}")
        self.provider = provider
        self.reason = reason
        self.detail = detail


class Rejected(SendFailure):
    """Refused for good: do not retry, do not try another provider."""


class NotAccepted(SendFailure):
    """Certainly not taken: retry later (after ``retry_after_seconds`` if given) or fail over."""

    def __init__(
        self, provider: str, reason: str, detail: str, retry_after_seconds: float | None = None
    ) -> None:
        super().__init__(provider, reason, detail)
        self.retry_after_seconds = retry_after_seconds


class OutcomeUnknown(SendFailure):
    """Perhaps taken: a repeat could deliver the code twice unless the provider deduplicates."""
