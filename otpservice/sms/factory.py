"""The sender factory: ``sms.providers`` as a ``ProviderChain`` of the configured providers."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx

from otpservice.config.schema import AcsProvider, ConsoleProvider, GenericProvider, TwilioProvider
from otpservice.sms.acs import AcsSender
from otpservice.sms.chain import ProviderChain
from otpservice.sms.console import ConsoleSender
from otpservice.sms.generic import GenericSender
from otpservice.sms.twilio import TwilioSender

if TYPE_CHECKING:
    from collections.abc import Callable

    from otpservice.config.schema import Settings
    from otpservice.sms import BodySigner, SmsProvider


def build_sender(settings: Settings, *, signer: Callable[[str], BodySigner]) -> ProviderChain:
    """The configured providers, in order, sharing one pooled HTTP client; ``signer`` makes
    the signer of a secret (for the generic gateway)."""
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
            senders.append(GenericSender(provider, client, signer(provider.secret)))
    return ProviderChain(
        senders,
        breaker_failures=settings.sms.breaker_failures,
        breaker_seconds=settings.sms.breaker_seconds,
        client=client,
    )
