"""QueueStore: a durable work queue, a Redis Stream with a consumer group; two of them.

The outbox holds SMS to send (added by ``/challenge``, read by the delivery workers); the event
queue holds events for the login app's callback URL. An entry is read with ``XREADGROUP``;
until a worker finishes it (acknowledged and deleted in one script) it stays in the group's
pending list, so a worker that dies mid-way leaves it to be taken over by another
(``XAUTOCLAIM`` once it has been idle ``claim_idle``). An entry to retry later waits in a sorted
set by due time and is moved back to the stream when due. A queue's stream and set share one
hash slot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import msgspec
from redis.exceptions import ResponseError

from otpservice.store.scripts import reply_text

if TYPE_CHECKING:
    from collections.abc import Callable

    from otpservice.store.keys import KeySpace
    from otpservice.store.scripts import StoreCommands

GROUP = "workers"


E = TypeVar("E", bound=msgspec.Struct)


@dataclass(frozen=True, slots=True)
class QueueItem(Generic[E]):
    """An entry as a worker received it: its stream id, and whether it was taken over."""

    stream_id: str
    entry: E | None  # None: unreadable (written by something else); finish it
    reclaimed: bool = False


_encoder = msgspec.msgpack.Encoder()


class QueueStore(Generic[E]):
    """Adds, hands out, finishes and reschedules the entries of one queue."""

    def __init__(
        self, commands: StoreCommands, keys: KeySpace, name: str, entry_type: type[E]
    ) -> None:
        self._commands = commands
        self._scripts = commands.scripts
        self._stream, self._delayed = keys.queue(name)
        self._decoder = msgspec.msgpack.Decoder(entry_type)
        self._group_ready = False
        self._claim_cursor = "0-0"

    async def add(self, entry: E) -> None:
        """Queue an entry; when this returns, it will be handled even if this process dies."""
        async with self._commands.command() as redis:
            await redis.xadd(self._stream, {"e": _encoder.encode(entry)})

    async def read(self, consumer: str, count: int, block_ms: int | None) -> list[QueueItem[E]]:
        """New entries for ``consumer``, waiting up to ``block_ms`` for one (None: no wait)."""
        await self._ensure_group()
        try:
            async with self._commands.command() as redis:
                reply = await redis.xreadgroup(
                    GROUP, consumer, {self._stream: ">"}, count=count, block=block_ms
                )
        except ResponseError as exc:
            if not str(exc).startswith(("NOGROUP", "UNBLOCKED")):
                raise
            # The stream or its group is gone (a restart without persistence, a flush, a
            # failover to an empty replica): make them again.
            self._group_ready = False
            return []
        # RESP2 answers [[stream, entries]], RESP3 {stream: entries}.
        streams: Any = reply or []
        pairs = streams.items() if isinstance(streams, dict) else streams
        return [self._item(sid, fields) for _, entries in pairs for sid, fields in entries]

    async def reclaim(self, consumer: str, idle_ms: int, count: int) -> list[QueueItem[E]]:
        """Entries another worker took but has not finished for ``idle_ms``: now ``consumer``'s."""
        await self._ensure_group()
        try:
            async with self._commands.command() as redis:
                reply = await redis.xautoclaim(
                    self._stream,
                    GROUP,
                    consumer,
                    min_idle_time=idle_ms,
                    start_id=self._claim_cursor,
                    count=count,
                )
        except ResponseError as exc:
            if not str(exc).startswith("NOGROUP"):
                raise
            self._group_ready = False  # the stream or group is gone: made again next time
            return []
        # Redis scans a bounded part of the pending list per call: go on from where it stopped.
        cursor = reply[0]
        self._claim_cursor = cursor.decode() if isinstance(cursor, bytes) else str(cursor)
        claimed: list[Any] = reply[1]
        return [self._item(sid, fields, reclaimed=True) for sid, fields in claimed if fields]

    async def finish(self, item: QueueItem[E]) -> None:
        """The entry's outcome is final: forget it."""
        await self._commands.run_script(
            self._scripts.queue_finish, [self._stream], [GROUP, item.stream_id]
        )

    async def retry_later(self, consumer: str, item: QueueItem[E], entry: E, due_ms: int) -> bool:
        """Set the entry aside until ``due_ms`` (Unix ms), as ``entry``; False when it is no
        longer ``consumer``'s (another worker took it over: that one decides)."""
        reply = await self._commands.run_script(
            self._scripts.queue_retry,
            [self._stream, self._delayed],
            [GROUP, item.stream_id, due_ms, _encoder.encode(entry), consumer],
        )
        return bool(int(reply[0]))

    async def touch(self, consumer: str, item: QueueItem[E]) -> bool:
        """Keep an entry ``consumer`` is still handling from looking idle; False if not its."""
        reply = await self._commands.run_script(
            self._scripts.queue_touch, [self._stream], [GROUP, consumer, item.stream_id]
        )
        return bool(int(reply[0]))

    async def release_due(self, limit: int) -> int:
        """Move entries whose retry is due back to the stream; how many moved."""
        reply = await self._commands.run_script(
            self._scripts.queue_release, [self._stream, self._delayed], [limit]
        )
        return int(reply[0])

    async def erase(self, matches: Callable[[E], bool]) -> int:
        """Delete every entry, waiting or set aside for a retry, that ``matches``; how many.
        An entry a worker holds right now may still be handled once."""
        erased = await self._commands.delete_stream_entries(
            self._stream, lambda fields: self._matches(fields, matches)
        )
        async with self._commands.command() as redis:
            delayed: list[Any] = await redis.zrange(self._delayed, 0, -1)
            doomed_delayed = [raw for raw in delayed if self._matches({b"e": raw}, matches)]
            if doomed_delayed:
                erased += int(await redis.zrem(self._delayed, *doomed_delayed))
        return erased

    def _matches(self, fields: dict[Any, Any], matches: Callable[[E], bool]) -> bool:
        entry = self._entry(fields)
        return entry is not None and matches(entry)

    def _entry(self, fields: dict[Any, Any]) -> E | None:
        """The entry a stream entry's fields (or a delayed member, as ``{b"e": raw}``) hold;
        None when it is missing or cannot be decoded."""
        raw = fields.get(b"e") or fields.get("e")
        try:
            return self._decoder.decode(raw) if raw else None
        except msgspec.DecodeError:
            return None

    async def oldest_age_ms(self, now_ms: int) -> int:
        """How long the oldest entry in the stream has waited (0 when it is empty)."""
        async with self._commands.command() as redis:
            first: list[Any] = await redis.xrange(self._stream, "-", "+", count=1) or []
        if not first:
            return 0
        return max(0, now_ms - int(reply_text(first[0][0]).split("-", 1)[0]))

    async def backlog(self) -> tuple[int, int]:
        """Entries in the stream (pending ones included) and waiting for a retry."""
        async with self._commands.command() as redis:
            return int(await redis.xlen(self._stream)), int(await redis.zcard(self._delayed))

    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            async with self._commands.command() as redis:
                await redis.xgroup_create(self._stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def _item(
        self, stream_id: bytes | str, fields: dict[Any, Any], *, reclaimed: bool = False
    ) -> QueueItem[E]:
        return QueueItem(
            stream_id=reply_text(stream_id), entry=self._entry(fields), reclaimed=reclaimed
        )
