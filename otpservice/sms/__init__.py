"""Sending SMS: providers behind one small interface, chained for failover.

``build_sender`` turns ``sms.providers`` into a ``ProviderChain``. Each provider module knows
its wire format; ``outcomes`` says what a failure means for a retry; ``templates`` writes the
message text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import httpx

from otpservice.settings import AcsProvider, ConsoleProvider, GenericProvider, TwilioProvider
from otpservice.sms.acs import AcsSender
from otpservice.sms.chain import ProviderChain
from otpservice.sms.console import ConsoleSender
from otpservice.sms.generic import GenericSender
from otpservice.sms.outcomes import (
    NotAccepted,
    OutboundSms,
    OutcomeUnknown,
    Rejected,
    SendFailure,
    SendReceipt,
)
from otpservice.sms.twilio import TwilioSender

if TYPE_CHECKING:
    from otpservice.settings import Settings


class SmsSender(Protocol):
    """Hands a message to an SMS provider (one, or the chain of them)."""

    async def send(self, message: OutboundSms) -> SendReceipt:
        """Send ``message``.

        Raises:
            Rejected, NotAccepted, OutcomeUnknown: see ``otpservice.sms.outcomes``.
        """
        ...


class SmsProvider(SmsSender, Protocol):
    """One provider."""

    # The provider's name in logs and delivery states.
    name: str
    # True when the provider drops a repeat of the same send id, so a timeout may be retried.
    deduplicates: bool


def build_sender(settings: Settings) -> ProviderChain:
    """The configured providers, in order, sharing one pooled HTTP client."""
    client = httpx.AsyncClient(
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        follow_redirects=False,
    )
    senders: list[SmsProvider] = []
    for provider in settings.sms.providers:
        if isinstance(provider, ConsoleProvider):
            senders.append(ConsoleSender(name=provider.label))
        elif isinstance(provider, AcsProvider):
            senders.append(AcsSender(provider, client))
        elif isinstance(provider, TwilioProvider):
            senders.append(TwilioSender(provider, client, settings.public_base_url))
        elif isinstance(provider, GenericProvider):
            senders.append(GenericSender(provider, client))
    return ProviderChain(
        senders,
        breaker_failures=settings.sms.breaker_failures,
        breaker_seconds=settings.sms.breaker_seconds,
        client=client,
    )


__all__ = [
    "ConsoleSender",
    "NotAccepted",
    "OutboundSms",
    "OutcomeUnknown",
    "ProviderChain",
    "Rejected",
    "SendFailure",
    "SendReceipt",
    "SmsProvider",
    "SmsSender",
    "build_sender",
]
