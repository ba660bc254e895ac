"""Keyword answers: the service's own replies to STOP, START and HELP.

Only for senders whose ``keyword_replies`` is ``"service"``; elsewhere the provider or the
carrier answers, and a person must not get two. The answer to STOP goes out although the
number has just opted out: it is the one confirmation the rules allow, within 5 minutes, and at
most once per keyword and number in that time (a person who sends STOP three times gets one).

Answers travel through their own durable queue, sealed like codes, and go out through the
sender that received the keyword (``workers/replies.py`` sends them).
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import TYPE_CHECKING

import msgspec

from otpservice.keywords import Keyword

if TYPE_CHECKING:
    from otpservice.config.schema import Provider, Settings
    from otpservice.crypto.sealing import MessageSealer
    from otpservice.store.inbound import InboundStore
    from otpservice.store.queues import QueueStore

log = logging.getLogger("otpservice.replies")  # a log field: kept as named before the move

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
            Keyword.OPT_OUT: texts.opt_out,
            Keyword.OPT_IN: texts.opt_in,
            Keyword.HELP: texts.help,
        }
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
            log.info("keyword %s answered within %d s already", keyword.value, REPLY_WINDOW_SECONDS)
            return False
        reply_id = str(uuid.uuid4())
        key_id, sealed = self._sealer.seal_sms(to, self._texts[keyword], reply_id.encode())
        now = time.time()
        await self._queue.add(
            ReplyEntry(
                reply_id=reply_id,
                provider=sender.label,
                key_id=key_id,
                sealed=sealed,
                first_attempt_at=now,
                deadline_ms=int((now + REPLY_WINDOW_SECONDS) * 1000),
            )
        )
        return True
