"""SendPacer: keeps every worker of the fleet within each sender's configured send rate."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

from otpservice.sms import NotAccepted

if TYPE_CHECKING:
    from otpservice.config.schema import Settings
    from otpservice.store.rates import SendRates


class SendPacer:
    """Waits for a send slot of a provider's sender (``messages_per_second``, ``burst``)."""

    def __init__(self, rates: SendRates, settings: Settings) -> None:
        self._rates = rates
        self._limits = {
            p.label: (p.messages_per_second, p.burst)
            for p in settings.sms.providers
            if p.messages_per_second is not None
        }

    async def wait_for_slot(self, provider: str, deadline_ms: int, stopping: asyncio.Event) -> None:
        """Wait until ``provider``'s sender may send one more message.

        Raises:
            NotAccepted: the wait would outlast ``deadline_ms``, or the worker is stopping
            (``stopping`` set): the message goes back to the queue for a retry, by this or
            another worker.
        """
        limit = self._limits.get(provider)
        if limit is None:
            return
        while not (slot := await self._rates.take(provider, *limit)).granted:
            wait = slot.wait_seconds
            if (time.time() + wait) * 1000 >= deadline_ms:
                raise NotAccepted(provider, "rate_limited", "the sender's rate limit")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), wait)
            if stopping.is_set():
                raise NotAccepted(provider, "shutting_down", "handed back at shutdown", 0.0)
