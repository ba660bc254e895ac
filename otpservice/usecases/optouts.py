"""Opt-outs: the numbers whose owners asked for no more messages, and the operator's controls.

Enforced in two places, both atomic in Redis: the issuing script refuses a new challenge for an
opted-out number (``403 recipient_opted_out``), and the outbox refuses to start sending to one
(a STOP that lands between accepting and sending still stops the message).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, NamedTuple

from otpservice.crypto.sealing import SealError
from otpservice.phone import parse_phone

if TYPE_CHECKING:
    from otpservice.crypto.sealing import MessageSealer
    from otpservice.models import OptOut, OptOutChange, OptOutSource
    from otpservice.store.optouts import IndexedNumber, OptOutStore
    from otpservice.usecases.analytics import Analytics
    from otpservice.usecases.events import AppEvents

log = logging.getLogger("otpservice.optouts")  # a log field: kept as named before the move


class OptOutResult(NamedTuple):
    """What ``OptOuts.opt_out`` did: the number's record, whether this call added it, and
    whether the STOP that asked was a replay (then nothing changed)."""

    record: OptOut | None
    added: bool
    replayed: bool


class OptOuts:
    """Records and removes opt-outs; every change is logged with its source."""

    def __init__(
        self, store: OptOutStore, events: AppEvents, analytics: Analytics, sealer: MessageSealer
    ) -> None:
        self._store = store
        self._events = events
        self._analytics = analytics
        self._sealer = sealer
        # Set once a pass of ``seal_index`` found every number sealed with the current key.
        self._index_sealed = False

    def _seal(self, e164: str) -> str:
        return self._sealer.seal_text(e164, self._store.member(e164).encode())

    async def opt_out(
        self,
        phone: str,
        *,
        source: OptOutSource,
        sender: str = "",
        detail: str = "",
        keyword_id: str = "",
    ) -> OptOutResult:
        """Opt ``phone`` out (kept if it already was) and tell the app; its record, whether
        this call added it, and whether it was a replay: ``keyword_id``, the message id of
        the STOP that asked, seen before, changes nothing.

        Raises:
            InvalidInput: ``invalid_phone``.
        """
        number = parse_phone(phone)
        reply = await self._store.add(
            number.e164,
            sealed_number=self._seal(number.e164),
            source=source,
            sender=sender,
            detail=detail,
            keyword_id=keyword_id,
        )
        if reply.replayed:
            log.warning("a replayed STOP from %s changed nothing", number.masked())
        added = reply.changed
        record = await self._store.get(number.e164)
        if added and record is not None:
            log.info("opt-out recorded for %s (source %s)", number.masked(), source)
            self._analytics.count("opt_outs", country=number.region)
            await self._events.optout_changed(
                number.e164, opted_out=True, source=source, at_ms=record.since_ms
            )
        return OptOutResult(record, added=added, replayed=reply.replayed)

    async def restore(
        self,
        phone: str,
        *,
        source: str,
        sender: str = "",
        detail: str = "",
        since_ms: int | None = None,
    ) -> bool:
        """Record an opt-out read from a file (a backup, another provider's export) with the
        source it names and when it happened (``since_ms``; None: now); whether it was new.
        The app is not told: a bulk import would flood it.

        Raises:
            InvalidInput: ``invalid_phone``.
        """
        number = parse_phone(phone)
        reply = await self._store.add(
            number.e164,
            sealed_number=self._seal(number.e164),
            source=source,
            sender=sender,
            detail=detail,
            since_ms=since_ms,
        )
        return reply.changed

    async def opt_in(self, phone: str, *, source: OptOutSource, keyword_id: str = "") -> bool:
        """Remove ``phone``'s opt-out, if any; whether it was a replay: ``keyword_id``, the
        message id of the START that asked, seen before, changes nothing.

        Raises:
            InvalidInput: ``invalid_phone``.
        """
        number = parse_phone(phone)
        reply = await self._store.remove(number.e164, source=source, keyword_id=keyword_id)
        if reply.replayed:
            log.warning("a replayed START from %s changed nothing", number.masked())
        if reply.changed:
            log.info("opt-out removed for %s (source %s)", number.masked(), source)
            self._analytics.count("opt_ins", country=number.region)
            await self._events.optout_changed(
                number.e164, opted_out=False, source=source, at_ms=int(time.time() * 1000)
            )
        return reply.replayed

    async def announce(self, phone: str) -> None:
        """Tell the app again where ``phone``'s opt-out stands, as a keyword changed it (for a
        repeat that finishes what a failed try began). An opt-out's event has the id it had.

        Raises:
            InvalidInput: ``invalid_phone``.
        """
        number = parse_phone(phone)
        record = await self._store.get(number.e164)
        await self._events.optout_changed(
            number.e164,
            opted_out=record is not None,
            source="keyword",
            at_ms=record.since_ms if record is not None else int(time.time() * 1000),
        )

    async def get(self, phone: str) -> OptOut | None:
        """``phone``'s opt-out, or None.

        Raises:
            InvalidInput: ``invalid_phone``.
        """
        return await self._store.get(parse_phone(phone).e164)

    async def history(self, phone: str) -> list[OptOutChange]:
        """``phone``'s opt-out changes, newest first (kept without expiry, at most 100).

        Raises:
            InvalidInput: ``invalid_phone``.
        """
        return await self._store.history(parse_phone(phone).e164)

    async def page(self, after: str, limit: int) -> tuple[list[OptOut], str | None]:
        """Opt-outs after the cursor ``after`` ("": the first page), in the index's order (of
        keyed digests: stable, and telling nothing), and the cursor of the next page (None:
        this was the last)."""
        indexed, following = await self._store.page(after, limit)
        numbers = [n for n in (self._number_of(entry) for entry in indexed) if n is not None]
        records = await asyncio.gather(*(self._store.get(n) for n in numbers))
        return [r for r in records if r is not None], following

    def _number_of(self, entry: IndexedNumber) -> str | None:
        """The number an index entry stands for; None when its seal does not open."""
        if not entry.sealed:
            return entry.member if entry.member.startswith("+") else None
        try:
            return self._sealer.open_text(entry.sealed, entry.member.encode())
        except SealError:
            log.error("opt-out index: entry %s does not open (its key is gone?)", entry.member)
            return None

    async def seal_index(self) -> None:
        """Seal with the current outbox key every number of the index still in clear (written
        by the release before, also by its pods during a deploy), in the index and in its
        record; and re-seal what the previous key sealed, so it can be retired. The second
        part runs on every call until a pass finds nothing to re-seal (pods still on the old
        key during a roll keep sealing with it), then logs so, once."""
        while clear := await self._store.clear_members(500):
            for number in clear:
                await self._store.reseal(number, self._seal(number), clear_member=True)
        if self._index_sealed:
            return
        after, resealed, unopened = "", 0, 0
        while True:
            indexed, following = await self._store.page(after, 500)
            for entry in indexed:
                if not entry.sealed or self._sealer.sealed_with_current(entry.sealed):
                    continue
                opened = self._number_of(entry)
                if opened is None:
                    unopened += 1
                    continue
                await self._store.reseal(opened, self._seal(opened), clear_member=False)
                resealed += 1
            if following is None:
                break
            after = following
        if unopened:
            log.warning(
                "opt-out index: %d numbers could not be opened (their key is gone): they stay "
                "opted out, but out of the list and the export",
                unopened,
            )
        if resealed:
            log.info("opt-out index: %d numbers sealed anew with the current key", resealed)
            return
        self._index_sealed = True
        log.info("opt-out index: every number is sealed with the current outbox key")
