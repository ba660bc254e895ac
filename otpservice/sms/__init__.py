"""Sending SMS: providers behind one small interface, chained for failover.

This module holds the interface (``SmsSender``, ``SmsProvider``) and the outcomes only, so
that code which merely names a message or a failure loads no HTTP client and no provider.
``factory.build_sender`` turns ``sms.providers`` into a ``chain.ProviderChain``; each provider
module knows its wire format; ``outcomes`` says what a failure means for a retry;
``templates`` writes the message text.
"""

from __future__ import annotations

from typing import Protocol

from otpservice.sms.outcomes import (
    NotAccepted,
    OutboundSms,
    OutcomeUnknown,
    Rejected,
    SendFailure,
    SendReceipt,
)


class SmsSender(Protocol):
    """Hands a message to an SMS provider (one, or the chain of them)."""

    async def send(self, message: OutboundSms) -> SendReceipt:
        """Send ``message``.

        Raises:
            Rejected, NotAccepted, OutcomeUnknown: see ``otpservice.sms.outcomes``.
        """
        ...


class BodySigner(Protocol):
    """Signs a request body (``crypto.webhook_signing.WebhookSigner``, given by the runtime)."""

    def headers(self, message_id: str, body: bytes) -> dict[str, str]:
        """The headers that carry the signature of ``body``, sent as ``message_id``."""
        ...


class SmsProvider(SmsSender, Protocol):
    """One provider."""

    # The provider's name in logs and delivery states.
    name: str
    # True when the provider drops a repeat of the same send id, so a timeout may be retried.
    deduplicates: bool


__all__ = [
    "BodySigner",
    "NotAccepted",
    "OutboundSms",
    "OutcomeUnknown",
    "Rejected",
    "SendFailure",
    "SendReceipt",
    "SmsProvider",
    "SmsSender",
]
