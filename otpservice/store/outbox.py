"""OutboxStore: the durable queue of messages to send, a Redis Stream with a consumer group.

A message is added by ``/challenge`` and read by the delivery workers (``XREADGROUP``). Until a
worker finishes it (acknowledged and deleted in one script) it stays in the group's pending list,
so a worker that dies mid-send leaves it to be taken over by another (``XAUTOCLAIM`` once it
has been idle ``claim_idle``). A message to retry later waits in a sorted set by due time and is
moved back to the stream when due. The stream and the set share one hash slot.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
from redis.exceptions import ResponseError

if TYPE_CHECKING:
    from otpservice.store.keys import KeySpace
    from otpservice.store.scripts import StoreCommands

GROUP = "senders"


class OutboxEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One message as the outbox holds it: the recipient and text only sealed."""

    send_id: str
    challenge_id: str
    key_id: str
    sealed: bytes
    attempt: int = 0
    first_attempt_at: float
    deadline_ms: int
    # Set when the outcome of an attempt is unknown at a provider that drops repeats: the
    # message may only be repeated there.
    provider: str = ""


class OutboxItem(msgspec.Struct, frozen=True, kw_only=True):
    """An entry as a worker received it: its stream id, and whether it was taken over."""

    stream_id: str
    entry: OutboxEntry | None  # None: unreadable (written by something else); finish it
    reclaimed: bool = False


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(OutboxEntry)


class OutboxStore:
    """Adds, hands out, finishes and reschedules outbox messages."""

    def __init__(self, commands: StoreCommands, keys: KeySpace) -> None:
        self._commands = commands
        self._scripts = commands.scripts
        self._keys = keys
        self._stream, self._delayed = keys.outbox()
        self._group_ready = False

    async def add(self, entry: OutboxEntry) -> None:
        """Queue a message; when this returns, it will be sent even if this process dies."""
        async with self._commands.command() as redis:
            await redis.xadd(self._stream, {"e": _encoder.encode(entry)})

    async def read(self, consumer: str, count: int, block_ms: int | None) -> list[OutboxItem]:
        """New messages for ``consumer``, waiting up to ``block_ms`` for one (None: no wait)."""
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
        return [_item(stream_id, fields) for _, entries in pairs for stream_id, fields in entries]

    async def reclaim(self, consumer: str, idle_ms: int, count: int) -> list[OutboxItem]:
        """Messages another worker took but has not finished for ``idle_ms``: now ``consumer``'s."""
        await self._ensure_group()
        async with self._commands.command() as redis:
            reply = await redis.xautoclaim(
                self._stream, GROUP, consumer, min_idle_time=idle_ms, start_id="0-0", count=count
            )
        claimed: list[Any] = reply[1]
        return [_item(stream_id, fields, reclaimed=True) for stream_id, fields in claimed if fields]

    async def finish(self, item: OutboxItem) -> None:
        """The message's outcome is final: forget it."""
        await self._commands.run_script(
            self._scripts.outbox_finish, [self._stream], [GROUP, item.stream_id]
        )

    async def retry_later(self, item: OutboxItem, entry: OutboxEntry, due_ms: int) -> None:
        """Set the message aside until ``due_ms`` (Unix ms), as ``entry``."""
        await self._commands.run_script(
            self._scripts.outbox_retry,
            [self._stream, self._delayed],
            [GROUP, item.stream_id, due_ms, _encoder.encode(entry)],
        )

    async def release_due(self, limit: int) -> int:
        """Move messages whose retry is due back to the stream; how many moved."""
        reply = await self._commands.run_script(
            self._scripts.outbox_release, [self._stream, self._delayed], [limit]
        )
        return int(reply[0])

    async def take_send_slot(self, provider: str, per_second: float, burst: int) -> float:
        """Take one of ``provider``'s send slots: 0, or the seconds to wait before asking again.

        One limit for the whole fleet: every worker of every process asks the same key.
        """
        reply = await self._commands.run_script(
            self._scripts.take_send_slot,
            [self._keys.send_rate(provider)],
            [f"{1000 / per_second:.3f}", burst],
        )
        return int(reply[0]) / 1000

    async def backlog(self) -> tuple[int, int]:
        """Messages in the stream (pending ones included) and waiting for a retry."""
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


def _item(stream_id: bytes | str, fields: dict[Any, Any], *, reclaimed: bool = False) -> OutboxItem:
    sid = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    raw = fields.get(b"e") or fields.get("e")
    try:
        entry = _decoder.decode(raw) if raw else None
    except msgspec.DecodeError:
        entry = None
    return OutboxItem(stream_id=sid, entry=entry, reclaimed=reclaimed)
