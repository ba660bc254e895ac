"""Keyword answers: the service's own replies to STOP, START and HELP.

Only for senders whose ``keyword_replies`` is ``"service"``; elsewhere the provider or the
carrier answers, and a person must not get two. The answer to STOP goes out although the
number has just opted out: it is the one confirmation the rules allow, within 5 minutes, and at
most once per keyword and number in that time (a person who sends STOP three times gets one).

Answers travel through their own durable queue, sealed like codes, and go out through the
sender that received the keyword. A worker never repeats an answer that may have gone out
(a timeout, a worker that died mid-send) unless the provider drops repeats.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import TYPE_CHECKING

import msgspec

from otpservice.keywords import Keyword
from otpservice.queue_worker import QueueWorker, retry_delay
from otpservice.sealing import SealError
from otpservice.sms import NotAccepted, OutboundSms, OutcomeUnknown, Rejected

if TYPE_CHECKING:
    from otpservice.pacing import SendPacer
    from otpservice.sealing import MessageSealer
    from otpservice.settings import Provider, Settings
    from otpservice.sms import ProviderChain
    from otpservice.store.inbound import InboundStore
    from otpservice.store.outbox import QueueItem, QueueStore

log = logging.getLogger(__name__)

# One answer per keyword and number in this window; an answer later than it is not sent.
REPLY_WINDOW_SECONDS = 300


class ReplyEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One answer as its queue holds it: recipient and text sealed."""

    reply_id: str
    provider: str  # the sender that received the keyword; the answer goes out there only
    key_id: str
    sealed: bytes
    attempt: int = 0
    first_attempt_at: float
    deadline_ms: int


class KeywordReplies:
    """Decides whether the service answers a keyword, and queues the answer."""

    def __init__(
        self,
        settings: Settings,
        *,
        queue: QueueStore[ReplyEntry],
        store: InboundStore,
        sealer: MessageSealer,
    ) -> None:
        app_name = settings.sms.app_name
        texts = settings.sms.replies
        self._texts = {
            Keyword.OPT_OUT: texts.opt_out, Keyword.OPT_IN: texts.opt_in, Keyword.HELP: texts.help,
        }  # fmt: skip
        self._texts = {k: v.replace("{app_name}", app_name) for k, v in self._texts.items()}
        self._queue = queue
        self._store = store
        self._sealer = sealer

    async def answer(self, keyword: Keyword, *, to: str, sender: Provider) -> bool:
        """Queue the answer to ``keyword`` from ``to`` (E.164), received by ``sender``, if the
        service answers for that sender and has not answered that keyword within 5 minutes.
        Returns whether an answer was queued."""
        if sender.keyword_replies != "service":
            return False
        if not await self._store.claim_reply(to, keyword.value, REPLY_WINDOW_SECONDS):
            log.info("keyword %s answered within %d s already", keyword.value,
                     REPLY_WINDOW_SECONDS)  # fmt: skip
            return False
        reply_id = str(uuid.uuid4())
        key_id, sealed = self._sealer.seal_sms(to, self._texts[keyword], reply_id.encode())
        now = time.time()
        await self._queue.add(
            ReplyEntry(
                reply_id=reply_id, provider=sender.label, key_id=key_id, sealed=sealed,
                first_attempt_at=now, deadline_ms=int((now + REPLY_WINDOW_SECONDS) * 1000),
            )
        )  # fmt: skip
        return True


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
            queue, concurrency=4, claim_idle_ms=settings.claim_idle_seconds * 1000,
            consumer=consumer,
        )  # fmt: skip
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
            to=opened.to, body=opened.body, challenge_id="", send_id=entry.reply_id,
            first_attempt_at=entry.first_attempt_at,
        )  # fmt: skip

        async def before_attempt(provider: str) -> bool:
            await self._pacer.wait_for_slot(provider, entry.deadline_ms, self.stopping)
            return True

        try:
            await self._providers.send(message, before_attempt=before_attempt, only=entry.provider)
        except NotAccepted as exc:
            await self._retry_later(item, entry, exc)
            return
        except (Rejected, OutcomeUnknown) as exc:
            log.warning("replies: answer %s not sent for certain via %s: %s",
                        entry.reply_id, exc.provider, exc.reason)  # fmt: skip
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
                log.warning("replies: answer %s perhaps sent by a worker that stopped; not "
                            "repeated", entry.reply_id)  # fmt: skip
                return False
        return True

    async def _retry_later(
        self, item: QueueItem[ReplyEntry], entry: ReplyEntry, exc: NotAccepted
    ) -> None:
        delay = retry_delay(entry.attempt, self._retry.retry_base_seconds,
                            self._retry.retry_max_seconds, exc.retry_after_seconds)  # fmt: skip
        due_ms = int((time.time() + delay) * 1000)
        if due_ms >= entry.deadline_ms:
            log.warning("replies: answer %s not taken by %s (%s) in time; dropped",
                        entry.reply_id, exc.provider, exc.reason)  # fmt: skip
            await self._queue.finish(item)
            return
        await self._queue.retry_later(
            self.consumer, item, msgspec.structs.replace(entry, attempt=entry.attempt + 1), due_ms
        )
