"""SendPacer: keeps every worker of the fleet within each sender's configured send rate.

The limit is one key per sender in Redis, shared by the fleet. While that key cannot be reached
(its master failing over), each process paces itself at its share of the rate instead,
``messages_per_second`` divided by the delivery workers lately seen in the fleet, so the fleet
as a whole stays about within the limit and delivery goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from otpservice.errors import Unavailable
from otpservice.sms import NotAccepted
from otpservice.store.rates import SendSlot

if TYPE_CHECKING:
    from collections.abc import Callable

    from otpservice.config.schema import Settings
    from otpservice.store.rates import SendRates

log = logging.getLogger("otpservice.pacing")


class LocalPace:
    """A process's own rate limit per sender (GCRA on the monotonic clock), for when the
    fleet's cannot be reached."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._next: dict[str, float] = {}  # theoretical arrival time of each sender's next send

    def take(self, provider: str, per_second: float, burst: int) -> SendSlot:
        """Take one of ``provider``'s slots at ``per_second``, or say how long to wait."""
        interval = 1 / per_second
        now = self._clock()
        due = max(self._next.get(provider, now), now)
        early = due - now - (burst - 1) * interval
        if early > 0:
            return SendSlot(early, 0)
        self._next[provider] = due + interval
        return SendSlot(0, 0)


class SendPacer:
    """Waits for a send slot of a provider's sender (``messages_per_second``, ``burst``)."""

    def __init__(
        self, rates: SendRates, settings: Settings, local: LocalPace | None = None
    ) -> None:
        self._rates = rates
        self._local = local or LocalPace()
        # Delivery workers in the fleet lately (set by the delivery worker): the share of a
        # rate this process takes on its own while the fleet's key cannot be reached.
        self.fleet_size = 1
        self._on_own: set[str] = set()  # senders paced by this process alone right now
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
        while not (slot := await self._take(provider, *limit)).granted:
            wait = slot.wait_seconds
            if (time.time() + wait) * 1000 >= deadline_ms:
                raise NotAccepted(provider, "rate_limited", "the sender's rate limit")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), wait)
            if stopping.is_set():
                raise NotAccepted(provider, "shutting_down", "handed back at shutdown", 0.0)

    async def _take(self, provider: str, per_second: float, burst: int) -> SendSlot:
        try:
            slot = await self._rates.take(provider, per_second, burst)
        except Unavailable:
            share = per_second / max(1, self.fleet_size)
            if provider not in self._on_own:
                self._on_own.add(provider)
                log.warning(
                    "pacing: %s's fleet-wide rate cannot be reached; this process sends at "
                    "%.3g/s until it can",
                    provider,
                    share,
                )
            return self._local.take(provider, share, burst)
        self._on_own.discard(provider)
        return slot
