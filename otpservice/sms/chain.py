"""The configured providers in order, each behind a circuit breaker.

A message goes to the first provider whose circuit is closed. When that provider certainly did
not take it (``NotAccepted``) the next one is tried. A refusal (``Rejected``) or a perhaps-sent
message (``OutcomeUnknown``) stops there: another provider would not help, or could deliver a
second code.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from otpservice.metrics import PROVIDER_ERRORS, PROVIDER_SECONDS
from otpservice.sms.outcomes import NotAccepted, Rejected, SendFailure

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    import httpx

    from otpservice.sms import SmsProvider
    from otpservice.sms.outcomes import OutboundSms, SendReceipt

log = logging.getLogger(__name__)


class AttemptCancelled(Exception):
    """The message must not be sent any more (its challenge ended)."""


class CircuitBreaker:
    """Opens after ``failures`` consecutive failures; after ``open_seconds`` lets one try."""

    def __init__(
        self,
        failures: int,
        open_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._threshold = failures
        self._open_seconds = open_seconds
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None

    def allows(self) -> bool:
        """Closed, or open long enough that one trial may go (its result closes or reopens)."""
        if self._opened_at is None:
            return True
        if self._clock() - self._opened_at >= self._open_seconds:
            self._opened_at = self._clock()  # one trial per open period
            return True
        return False

    def retry_after(self) -> float:
        """Seconds until the next trial; 0 when closed."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._open_seconds - (self._clock() - self._opened_at))

    def succeeded(self) -> None:
        """The provider answered: close."""
        self._failures = 0
        self._opened_at = None

    def failed(self) -> None:
        """The provider failed a message; open after enough in a row."""
        self._failures += 1
        if self._failures >= self._threshold:
            self._opened_at = self._clock()


class ProviderChain:
    """Sends through the first provider that takes the message."""

    def __init__(
        self,
        senders: Sequence[SmsProvider],
        *,
        breaker_failures: int,
        breaker_seconds: float,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``client``: the HTTP client the senders share, closed by ``aclose``."""
        self.senders = list(senders)
        self._client = client
        self._breakers = [
            CircuitBreaker(breaker_failures, breaker_seconds, clock) for _ in self.senders
        ]

    def provider(self, name: str) -> SmsProvider | None:
        """The provider called ``name``, if configured."""
        return next((sender for sender in self.senders if sender.name == name), None)

    async def send(
        self,
        message: OutboundSms,
        *,
        before_attempt: Callable[[str], Awaitable[bool]] | None = None,
        only: str | None = None,
    ) -> SendReceipt:
        """Send ``message``; ``SendFailure`` when no provider took it.

        ``before_attempt(provider name)`` runs before each provider is asked (to record that
        an attempt started); when it returns False nothing is sent and ``AttemptCancelled`` is
        raised. ``only`` limits the chain to one provider (a repeat that must go where the first
        attempt went).

        Raises:
            Rejected, OutcomeUnknown: from the provider that answered so.
            NotAccepted: every provider failed or has its circuit open.
            AttemptCancelled: ``before_attempt`` said no.
        """
        last: NotAccepted | None = None
        for sender, breaker in zip(self.senders, self._breakers, strict=True):
            if only is not None and sender.name != only:
                continue
            if not breaker.allows():
                continue
            if before_attempt is not None and not await before_attempt(sender.name):
                raise AttemptCancelled(message.challenge_id)
            started = time.perf_counter()
            try:
                receipt = await sender.send(message)
            except SendFailure as exc:
                PROVIDER_ERRORS.labels(provider=sender.name, reason=exc.reason).inc()
                if isinstance(exc, Rejected):
                    breaker.succeeded()  # the provider is up; it refused this one message
                    raise
                breaker.failed()
                if not isinstance(exc, NotAccepted):
                    raise  # OutcomeUnknown: perhaps sent, so no other provider is asked
                log.warning(
                    "provider %s did not take the message for challenge %s (%s); trying the next",
                    sender.name,
                    message.challenge_id,
                    exc.reason,
                )
                last = exc
                continue
            finally:
                PROVIDER_SECONDS.labels(provider=sender.name).observe(time.perf_counter() - started)
            breaker.succeeded()
            return receipt
        if last is not None:
            raise last
        wait = min(breaker.retry_after() for breaker in self._breakers)
        raise NotAccepted("all", "circuits_open", "every provider's circuit is open", wait or None)

    async def aclose(self) -> None:
        """Close the providers' connections."""
        if self._client is not None:
            await self._client.aclose()
