"""Delivery: workers that take messages from the outbox and hand them to the providers.

Plain async Python over the stores and the provider chain. The rules that keep a phone from
ever getting a code twice:

- Before each provider is asked, the challenge records "sending" with that provider and the
  message's send id. A worker that takes over a message someone else was sending (the other
  worker died) sends it again only to that same provider, and only if the provider drops
  repeats (ACS); otherwise the message is "unknown" and is not sent again.
- A failure that certainly sent nothing (``NotAccepted``) is retried with exponential backoff
  and full jitter, never after the code has expired; a refusal (``Rejected``) stops at once; a
  perhaps-sent message (``OutcomeUnknown``) is never repeated.
- A message for a challenge that was cancelled, replaced or has expired is not sent.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec

from otpservice.crypto.sealing import SealError, open_outbox_entry
from otpservice.models import NO_REPORT, DeliveryReport, DeliveryStatus, OutboxEntry
from otpservice.sms import NotAccepted, OutboundSms, OutcomeUnknown, Rejected
from otpservice.sms.chain import AttemptCancelled
from otpservice.workers.queue_worker import QueueWorker, retry_delay

if TYPE_CHECKING:
    from otpservice.config.schema import Settings
    from otpservice.crypto.sealing import MessageSealer
    from otpservice.sms.chain import ProviderChain
    from otpservice.store import ChallengeKeys, ChallengeStore, KeySpace
    from otpservice.store.queues import QueueItem, QueueStore
    from otpservice.usecases.analytics import Analytics
    from otpservice.usecases.events import AppEvents
    from otpservice.usecases.optouts import OptOuts
    from otpservice.workers.pacing import SendPacer

    OutboxItem = QueueItem[OutboxEntry]

log = logging.getLogger("otpservice.delivery")  # a log field: kept as named before the move

# States after which a taken-over message is only acknowledged.
_SETTLED = {
    DeliveryStatus.SENT,
    DeliveryStatus.UNKNOWN,
    DeliveryStatus.DELIVERED,
    DeliveryStatus.UNDELIVERED,
    DeliveryStatus.FAILED,
}


@dataclass(frozen=True, slots=True)
class Takeover:
    """What a worker does with a message it took over: send it or not, and where only."""

    send: bool
    # A provider that drops repeats: the send is repeated there and nowhere else.
    only: str | None = None


SETTLED = Takeover(send=False)  # settled by the takeover itself: nothing more to do
SEND = Takeover(send=True)


class _KnownOptOut(Rejected):
    """The number is opted out in our records: not sent, nothing new to record."""


class DeliveryWorker(QueueWorker[OutboxEntry]):
    """Sends outbox messages; several at once in one process (``outbox.concurrency``)."""

    queue_name = "outbox"

    def __init__(
        self,
        settings: Settings,
        *,
        outbox: QueueStore[OutboxEntry],
        challenges: ChallengeStore,
        pacer: SendPacer,
        keys: KeySpace,
        providers: ProviderChain,
        sealer: MessageSealer,
        events: AppEvents,
        optouts: OptOuts,
        analytics: Analytics,
        consumer: str | None = None,
    ) -> None:
        super().__init__(
            outbox,
            concurrency=settings.outbox.concurrency,
            claim_idle_ms=settings.claim_idle_seconds * 1000,
            consumer=consumer,
        )
        self._settings = settings.outbox
        self._outbox = outbox
        self._challenges = challenges
        self._pacer = pacer
        self._keys = keys
        self._providers = providers
        self._sealer = sealer
        self._events = events
        self._optouts = optouts
        self._analytics = analytics

    async def _report_backlog(self) -> None:
        await super()._report_backlog()
        self._pacer.fleet_size = self.fleet_size

    async def handle(self, item: OutboxItem) -> None:
        """Send one message (see the module docstring for the rules)."""
        await self._deliver_one(item)

    async def _deliver_one(self, item: OutboxItem) -> None:
        entry = item.entry
        keys = self._keys.for_challenge(entry.challenge_id) if entry else None
        if entry is None or keys is None or keys.forged:
            log.error("outbox: unreadable entry %s dropped", item.stream_id)
            await self._outbox.finish(item)
            return
        # Where a repeat must go, if anywhere: set after a timeout at a provider that drops
        # repeats, or found by a takeover. Never dropped, even when the code has expired.
        only: str | None = entry.provider or None
        if item.reclaimed:
            takeover = await self._on_takeover(item, entry, keys)
            if not takeover.send:
                return
            only = takeover.only or only
        if time.time() * 1000 >= entry.deadline_ms:
            # Perhaps sent already (a repeat was due): unknown, not failed.
            state = DeliveryStatus.UNKNOWN if only else DeliveryStatus.FAILED
            await self._settle(
                item,
                keys,
                state,
                report=DeliveryReport(provider=only or "", detail="expired before sending"),
            )
            return
        try:
            opened = open_outbox_entry(self._sealer, entry)
        except SealError as exc:
            log.error(
                "outbox: message for challenge %s cannot be opened: %s", entry.challenge_id, exc
            )
            await self._settle(
                item, keys, DeliveryStatus.FAILED, report=DeliveryReport(detail="cannot be opened")
            )
            return
        message = OutboundSms(
            to=opened.to,
            body=opened.body,
            challenge_id=entry.challenge_id,
            send_id=entry.send_id,
            first_attempt_at=entry.first_attempt_at,
        )

        async def before_attempt(provider: str) -> bool:
            await self._pacer.wait_for_slot(provider, entry.deadline_ms, self.stopping)
            update = await self._challenges.record_delivery(
                keys,
                DeliveryStatus.SENDING,
                send_id=entry.send_id,
                report=DeliveryReport(provider=provider),
            )
            if update.outcome == "opted_out":
                # A STOP (or an operator) got in between accepting and sending.
                raise _KnownOptOut(provider, "opted_out", "the recipient opted out")
            return update.outcome == "ok"

        try:
            receipt = await self._providers.send(message, before_attempt=before_attempt, only=only)
        except AttemptCancelled:
            log.info("outbox: challenge %s ended before its SMS went out", entry.challenge_id)
            await self._outbox.finish(item)
        except Rejected as exc:
            log.warning(
                "outbox: %s refused the SMS for challenge %s: %s",
                exc.provider,
                entry.challenge_id,
                exc.reason,
            )
            if exc.reason == "opted_out" and not isinstance(exc, _KnownOptOut):
                # The provider knows of an opt-out we did not (Twilio 21610): remember it.
                await self._optouts.opt_out(
                    message.to, source="provider_error", sender=exc.provider, detail=exc.detail
                )
            await self._settle(
                item,
                keys,
                DeliveryStatus.FAILED,
                report=DeliveryReport(provider=exc.provider, detail=exc.reason),
            )
        except OutcomeUnknown as exc:
            provider = self._providers.provider(exc.provider)
            if provider is not None and provider.deduplicates:
                # The provider drops a repeat of this send id: asking it again is safe.
                await self._retry(
                    item, msgspec.structs.replace(entry, provider=exc.provider), keys, exc
                )
                return
            log.warning(
                "outbox: the SMS for challenge %s may or may not have gone out via %s",
                entry.challenge_id,
                exc.provider,
            )
            await self._settle(
                item,
                keys,
                DeliveryStatus.UNKNOWN,
                report=DeliveryReport(provider=exc.provider, detail=exc.reason),
            )
        except NotAccepted as exc:
            # A repeat restricted to one provider stays restricted.
            await self._retry(item, msgspec.structs.replace(entry, provider=only or ""), keys, exc)
        else:
            await self._settle(
                item,
                keys,
                DeliveryStatus.SENT,
                report=DeliveryReport(
                    provider=receipt.provider, message_id=receipt.message_id or ""
                ),
            )
            log.info(
                "outbox: SMS for challenge %s sent via %s", entry.challenge_id, receipt.provider
            )

    async def _on_takeover(
        self, item: OutboxItem, entry: OutboxEntry, keys: ChallengeKeys
    ) -> Takeover:
        """Another worker had this message and went quiet: settle it here, send it normally,
        or repeat the send at the one provider that drops repeats."""
        state = await self._challenges.read_delivery(keys)
        if state.outcome == "missing" or state.previous in _SETTLED:
            # The other worker got that far; it may have died before telling the app (the
            # event has a stable id, so telling it twice is harmless).
            await self._events.delivery_ended(
                entry.challenge_id, state.previous, provider=state.provider, detail=""
            )
            await self._outbox.finish(item)
            return SETTLED
        if state.previous != DeliveryStatus.SENDING or state.send_id != entry.send_id:
            return SEND
        provider = self._providers.provider(state.provider)
        if provider is not None and provider.deduplicates:
            return Takeover(send=True, only=provider.name)
        await self._settle(
            item,
            keys,
            DeliveryStatus.UNKNOWN,
            report=DeliveryReport(provider=state.provider, detail="worker stopped mid-send"),
        )
        return SETTLED

    async def _retry(
        self,
        item: OutboxItem,
        entry: OutboxEntry,
        keys: ChallengeKeys,
        exc: NotAccepted | OutcomeUnknown,
    ) -> None:
        settings = self._settings
        retry_after = exc.retry_after_seconds if isinstance(exc, NotAccepted) else None
        delay = retry_delay(
            entry.attempt, settings.retry_base_seconds, settings.retry_max_seconds, retry_after
        )
        due_ms = int((time.time() + delay) * 1000)
        if due_ms >= entry.deadline_ms:
            # No time left. Perhaps sent (a timeout, or a restricted repeat): unknown.
            perhaps = isinstance(exc, OutcomeUnknown) or bool(entry.provider)
            state = DeliveryStatus.UNKNOWN if perhaps else DeliveryStatus.FAILED
            await self._settle(
                item,
                keys,
                state,
                report=DeliveryReport(
                    provider=exc.provider, detail=f"no provider took it: {exc.reason}"
                ),
            )
            return
        await self._challenges.record_delivery(
            keys,
            DeliveryStatus.RETRYING,
            send_id=entry.send_id,
            report=DeliveryReport(detail=exc.reason),
        )
        if not await self._outbox.retry_later(
            self.consumer, item, msgspec.structs.replace(entry, attempt=entry.attempt + 1), due_ms
        ):
            log.warning("outbox: %s was taken over meanwhile; its new owner decides", entry.send_id)
            return
        log.info(
            "outbox: SMS for challenge %s not taken (%s); retry in %.1f s",
            entry.challenge_id,
            exc.reason,
            delay,
        )

    async def _settle(
        self,
        item: OutboxItem,
        keys: ChallengeKeys,
        state: DeliveryStatus,
        report: DeliveryReport = NO_REPORT,
    ) -> None:
        """Record the final outcome on the challenge, tell the app, then forget the message."""
        assert item.entry is not None
        update = await self._challenges.record_delivery(
            keys, state, send_id=item.entry.send_id, report=report
        )
        self._analytics.delivery(state, update, report.provider)
        if update.outcome == "ok":
            await self._events.delivery_ended(
                item.entry.challenge_id, state, provider=report.provider, detail=report.detail
            )
        await self._outbox.finish(item)
