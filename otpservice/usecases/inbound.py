"""Inbound messages: what people reply to our numbers, from any provider's webhook.

Each reply is handled once (a provider's repeat of the same message changes nothing more):
a keyword opts the number out or back in, the service answers it where it is the one to
answer (see ``replies``), and the reply is relayed to the app as ``inbound.message``.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

from otpservice.errors import Unavailable
from otpservice.keywords import Keyword, match_keyword
from otpservice.phone import parse_phone

if TYPE_CHECKING:
    from otpservice.config.schema import Provider, Settings
    from otpservice.models import InboundSms
    from otpservice.phone import PhoneNumber
    from otpservice.store.inbound import InboundStore
    from otpservice.usecases.events import AppEvents
    from otpservice.usecases.optouts import OptOuts
    from otpservice.usecases.replies import KeywordReplies

log = logging.getLogger("otpservice.inbound")  # a log field: kept as named before the move


class InboundMessages:
    """Acts on replies: keywords, answers, and the event for the app."""

    def __init__(
        self,
        settings: Settings,
        *,
        optouts: OptOuts,
        replies: KeywordReplies,
        events: AppEvents,
        store: InboundStore,
    ) -> None:
        self._providers = settings.sms.providers
        self._extra_words = frozenset(
            " ".join(w.split()).upper() for w in settings.sms.extra_opt_out_words
        )
        self._optouts = optouts
        self._replies = replies
        self._events = events
        self._store = store

    def sender(self, kind: str, our_number: str, *, account: str | None = None) -> Provider | None:
        """Our sender of type ``kind`` (and provider ``account``, when the webhook proved
        which) that ``our_number`` belongs to: the one with that number, else the first with
        no number of its own (a Twilio Messaging Service picks from a pool). None when the
        number is none of ours: then nothing answers from it."""
        of_kind = [
            p
            for p in self._providers
            if p.kind == kind and account in (None, getattr(p, "account_sid", None))
        ]
        named = [p for p in of_kind if getattr(p, "from_number", None) == our_number]
        pooled = [p for p in of_kind if getattr(p, "from_number", None) is None]
        return next(iter(named or pooled), None)

    async def received(self, message: InboundSms, *, sender: Provider | None) -> Keyword | None:
        """Handle a reply that came in through ``sender`` (None: not one of ours, so no answer
        is sent). Returns its keyword, if it was one.

        Raises:
            InvalidInput: ``invalid_phone`` for a sender that is no valid number (a short code).
        """
        number = parse_phone(message.sender)
        claimed = bool(message.message_id)
        claim, token = (
            await self._store.claim(number.e164, message.message_id) if claimed else ("new", "")
        )
        if claim == "taken":
            log.info("inbound SMS %s handled already: ignored", message.message_id)
            return None
        try:
            keyword = await self._act(number, message, sender, retry=claim == "retry")
        except BaseException:
            if claimed:
                with contextlib.suppress(Unavailable):  # the claim expires by itself
                    await self._store.release(number.e164, message.message_id, token)
            raise
        if claimed:
            await self._store.handled(number.e164, message.message_id, token)
        return keyword

    async def _act(
        self, number: PhoneNumber, message: InboundSms, sender: Provider | None, *, retry: bool
    ) -> Keyword | None:
        """Act on a reply; ``retry``: a handler failed half-way on it before (its keyword was
        perhaps applied already: the rest is still done)."""
        keyword = match_keyword(message.body, self._extra_words)
        replayed = False
        if keyword is Keyword.OPT_OUT:
            done = await self._optouts.opt_out(
                number.e164,
                source="keyword",
                sender=message.recipient,
                detail=message.body.strip(),
                keyword_id=message.message_id,
            )
            replayed = done.replayed
        elif keyword is Keyword.OPT_IN:
            replayed = await self._optouts.opt_in(
                number.e164, source="keyword", keyword_id=message.message_id
            )
        if replayed and not retry:
            # A captured STOP or START sent again after its mark expired: not a new reply, so
            # no answer goes to the number and the app is not told of it.
            log.warning("inbound SMS from %s: a replayed keyword, ignored", number.masked())
            return None
        if replayed:
            # The first try applied it and failed before telling the app: tell it now.
            await self._optouts.announce(number.e164)
        if keyword is not None and sender is not None:
            await self._replies.answer(keyword, to=number.e164, sender=sender)
        log.info(
            "inbound SMS from %s%s",
            number.masked(),
            f": keyword {keyword.value}" if keyword else "",
        )
        await self._events.inbound_message(
            message.message_id,
            sender=number.e164,
            recipient=message.recipient,
            body=message.body,
            keyword=keyword.value if keyword else None,
        )
        return keyword
