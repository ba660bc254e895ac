"""Personal data: erasing what is held about a number, or about an API client's subject, on
request.

Everything goes except the opt-out itself, which the law requires to be kept: the number's
challenges, send and failure counters, and its events, in the event stream and in the queue
for the app's callback URL (replies with their bodies, opt-out changes, delivery outcomes of
its challenges). One the relay holds at that very moment may still reach the app once.
Beyond erasure, the event stream keeps nothing longer than ``privacy.retention_days``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from otpservice.models import Model
from otpservice.phone import parse_phone
from otpservice.usecases.factors import check_subject

if TYPE_CHECKING:
    from otpservice.store.factors import FactorStore
    from otpservice.store.feed import EventFeed
    from otpservice.store.keys import KeySpace
    from otpservice.store.numbers import NumberRecords
    from otpservice.store.optouts import OptOutStore
    from otpservice.store.queues import QueueStore
    from otpservice.usecases.events import AppEvent

log = logging.getLogger("otpservice.privacy")  # a log field: kept as named before the move


class Erasure(Model, frozen=True):
    """What an erasure removed, and whether the number's opt-out was kept."""

    records_erased: int
    events_erased: int
    opt_out_kept: bool


class SubjectErasure(Model, frozen=True):
    """What erasing an API client's subject removed."""

    records_erased: int
    events_erased: int


class PersonalData:
    """Erases a number's data, all but its opt-out; erases a subject's factors."""

    def __init__(
        self,
        records: NumberRecords,
        feed: EventFeed,
        optouts: OptOutStore,
        keys: KeySpace,
        event_queue: QueueStore[AppEvent] | None,
        factors: FactorStore,
    ) -> None:
        self._factors = factors
        self._records = records
        self._feed = feed
        self._optouts = optouts
        self._keys = keys
        self._event_queue = event_queue

    async def erase(self, phone: str) -> Erasure:
        """Erase what is held about ``phone`` except its opt-out.

        Raises:
            InvalidInput: ``invalid_phone``.
        """
        number = parse_phone(phone)
        e164 = number.e164
        tag = self._keys.number_tag(e164)

        def about_number(data: dict[str, Any]) -> bool:
            if e164 in (data.get("phone"), data.get("from")):
                return True
            # A challenge id names its number's slot, plainly or sealed in an opaque block.
            keys = self._keys.for_challenge(str(data.get("challenge_id", "")))
            return keys is not None and not keys.forged and keys.tag == tag

        records = await self._records.erase_all_but_opt_out(e164)
        events = await self._feed.erase(about_number)
        if self._event_queue is not None:
            # Events still waiting for the app's callback URL go too.
            events += await self._event_queue.erase(lambda event: about_number(event.data))
        kept = await self._optouts.forget_unless_opted_out(e164)
        log.info(
            "personal data of %s erased: %d records, %d events", number.masked(), records, events
        )
        return Erasure(records_erased=records, events_erased=events, opt_out_kept=kept)

    async def erase_subject(self, subject: str, *, client: str) -> SubjectErasure:
        """Erase an API client's subject: its authenticator-app factors (secret, label,
        recovery codes), failure counters, and the events that name it.

        Raises:
            InvalidInput: ``invalid_subject``.
        """
        check_subject(subject)
        records = await self._factors.erase(self._keys.subject(client, subject))

        def about_subject(data: dict[str, Any]) -> bool:
            return data.get("subject") == subject and data.get("client") == client

        events = await self._feed.erase(about_subject)
        if self._event_queue is not None:
            events += await self._event_queue.erase(lambda event: about_subject(event.data))
        log.info("a subject of client %s erased: %d records, %d events", client, records, events)
        return SubjectErasure(records_erased=records, events_erased=events)
