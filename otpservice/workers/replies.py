"""The replies worker: sends the keyword answers ``usecases/replies.py`` queued.

A worker never repeats an answer that may have gone out (a timeout, a worker that died
mid-send) unless the provider drops repeats.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import msgspec

from otpservice.crypto.sealing import SealError
from otpservice.sms import NotAccepted, OutboundSms, OutcomeUnknown, Rejected
from otpservice.usecases.replies import ReplyEntry
from otpservice.workers.queue_worker import QueueWorker, retry_delay

if TYPE_CHECKING:
    from otpservice.config.schema import Settings
    from otpservice.crypto.sealing import MessageSealer
    from otpservice.sms.chain import ProviderChain
    from otpservice.store.queues import QueueItem, QueueStore
    from otpservice.workers.pacing import SendPacer

log = logging.getLogger("otpservice.replies")  # a log field: kept as named before the move


class ReplyWorker(QueueWorker[ReplyEntry]):
    """Sends queued keyword answers, retrying what certainly did not go out."""

    queue_name = "replies"

    def __init__(
        self,
        queue: QueueStore[ReplyEntry],
        *,
        providers: ProviderChain,
        sealer: MessageSealer,
        pacer: SendPacer,
        settings: Settings,
        consumer: str | None = None,
    ) -> None:
        super().__init__(
            queue,
            concurrency=4,
            claim_idle_ms=settings.claim_idle_seconds * 1000,
            consumer=consumer,
        )
        self._providers = providers
        self._sealer = sealer
        self._pacer = pacer
        self._retry = settings.outbox

    async def handle(self, item: QueueItem[ReplyEntry]) -> None:
        """Send one answer; see the module docstring for when it is not sent."""
        entry = item.entry
        if entry is None or not self._may_send(item, entry):
            await self._queue.finish(item)
            return
        try:
            opened = self._sealer.open_sms(entry.key_id, entry.sealed, entry.reply_id.encode())
        except SealError as exc:
            log.error("replies: answer %s cannot be opened: %s", entry.reply_id, exc)
            await self._queue.finish(item)
            return
        message = OutboundSms(
            to=opened.to,
            body=opened.body,
            challenge_id="",
            send_id=entry.reply_id,
            first_attempt_at=entry.first_attempt_at,
        )

        async def before_attempt(provider: str) -> bool:
            await self._pacer.wait_for_slot(provider, entry.deadline_ms, self.stopping)
            return True

        try:
            await self._providers.send(message, before_attempt=before_attempt, only=entry.provider)
        except NotAccepted as exc:
            await self._retry_later(item, entry, exc)
            return
        except (Rejected, OutcomeUnknown) as exc:
            log.warning(
                "replies: answer %s not sent for certain via %s: %s",
                entry.reply_id,
                exc.provider,
                exc.reason,
            )
        else:
            log.info("replies: answer %s sent via %s", entry.reply_id, entry.provider)
        await self._queue.finish(item)

    def _may_send(self, item: QueueItem[ReplyEntry], entry: ReplyEntry) -> bool:
        if time.time() * 1000 >= entry.deadline_ms:
            log.warning("replies: answer %s too late to send; dropped", entry.reply_id)
            return False
        if item.reclaimed:
            # The worker that had it went quiet, perhaps after sending: repeat only where the
            # provider drops repeats.
            provider = self._providers.provider(entry.provider)
            if provider is None or not provider.deduplicates:
                log.warning(
                    "replies: answer %s perhaps sent by a worker that stopped; not repeated",
                    entry.reply_id,
                )
                return False
        return True

    async def _retry_later(
        self, item: QueueItem[ReplyEntry], entry: ReplyEntry, exc: NotAccepted
    ) -> None:
        delay = retry_delay(
            entry.attempt,
            self._retry.retry_base_seconds,
            self._retry.retry_max_seconds,
            exc.retry_after_seconds,
        )
        due_ms = int((time.time() + delay) * 1000)
        if due_ms >= entry.deadline_ms:
            log.warning(
                "replies: answer %s not taken by %s (%s) in time; dropped",
                entry.reply_id,
                exc.provider,
                exc.reason,
            )
            await self._queue.finish(item)
            return
        await self._queue.retry_later(
            self.consumer, item, msgspec.structs.replace(entry, attempt=entry.attempt + 1), due_ms
        )
