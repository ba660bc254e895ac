"""QueueStore: a durable work queue over shard streams, each a Redis Stream with a consumer group.

The outbox holds SMS to send (added by ``/challenge``, read by the delivery workers); the event
queue holds events for the app; the replies queue the answers to STOP, START and HELP. An entry
is read with ``XREADGROUP``; until a worker finishes it (acknowledged and deleted in one script)
it stays in the group's pending list, so a worker that dies mid-way leaves it to be taken over by
another (``XAUTOCLAIM`` once it has been idle ``claim_idle``). An entry to retry later waits in a
sorted set by due time and is moved back to its stream when due. A shard's stream and set share
one hash slot.

A queue is ``redis.queue_shards`` such shards, each on its own hash tag, so on Redis Cluster they
spread over the masters: no one master takes every enqueue, and a master's failover holds up only
its own shards. An entry goes to a random shard (another when that one refused it unrun). Workers
read without blocking, one pipeline per master per pass (``read_together``: one for all the
queues of a process), and skip a shard that could not be reached for ``SHARD_DOWN_SECONDS``. The
unsharded stream of the release before (``KeySpace.queue(name, None)``) is read as one more
shard while it exists, and never added to: new workers drain what old ones queued during a
rolling deploy.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import msgspec
from redis.exceptions import (
    ClusterDownError,
    MasterDownError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError

from otpservice.errors import QueueWriteInDoubt, StoreUnavailable
from otpservice.store.scripts import reply_text, store_errors

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from otpservice.store.keys import KeySpace
    from otpservice.store.scripts import StoreCommands

log = logging.getLogger("otpservice.queues")

GROUP = "workers"
# A shard that could not be reached is left alone this long, so the others go on at full pace.
SHARD_DOWN_SECONDS = 1.0
# How often workers look again for the previous release's unsharded stream once it is gone.
LEGACY_RECHECK_SECONDS = 30.0

E = TypeVar("E", bound=msgspec.Struct)


@dataclass(frozen=True, slots=True)
class QueueItem(Generic[E]):
    """An entry as a worker received it: its shard and stream id, and whether it was taken
    over."""

    stream_id: str
    entry: E | None  # None: unreadable (written by something else); finish it
    reclaimed: bool = False
    shard: int = 0  # index into the queue's shards

    @property
    def ref(self) -> tuple[int, str]:
        """Names the entry within its queue (stream ids repeat across shards)."""
        return self.shard, self.stream_id


@dataclass(slots=True)
class _Shard:
    """One shard's keys and what this process knows of it."""

    index: int
    stream: str
    delayed: str
    legacy: bool  # the previous release's unsharded stream: read, never added to
    group_ready: bool = False
    claim_cursor: str = "0-0"
    skip_until: float = 0.0  # monotonic: unreachable (or, legacy, absent) until then


_encoder = msgspec.msgpack.Encoder()


def _ran_not(error: StoreUnavailable) -> bool:
    """True when the store refused a command before running it (no connection could be made,
    the slot's master is down or read-only, no replicas for ``min-replicas-to-write``), so it
    can be sent elsewhere without being done twice; a timeout or a WAIT shortfall may have run."""
    cause = error.__cause__
    if isinstance(cause, (ClusterDownError, MasterDownError, ReadOnlyError, TryAgainError)):
        return True
    if isinstance(cause, ResponseError) and str(cause).startswith("NOREPLICAS"):
        return True
    return isinstance(cause, RedisConnectionError) and "connecting to" in str(cause)


class QueueStore(Generic[E]):
    """Adds, hands out, finishes and reschedules the entries of one queue's shards."""

    def __init__(
        self,
        commands: StoreCommands,
        keys: KeySpace,
        name: str,
        entry_type: type[E],
        *,
        shards: int,
    ) -> None:
        self._commands = commands
        self._scripts = commands.scripts
        self._keys = keys
        self._name = name
        layout: list[tuple[int | None, bool]] = [(i, False) for i in range(shards)]
        self._shards = [
            _Shard(position, *keys.queue(name, shard), legacy=legacy)
            for position, (shard, legacy) in enumerate([*layout, (None, True)])
        ]
        self._writable = [shard for shard in self._shards if not shard.legacy]
        self._decoder = msgspec.msgpack.Decoder(entry_type)
        self._next_read = 0

    async def add(
        self,
        entry: E,
        *,
        dedupe_id: str | None = None,
        remember_ms: int = 0,
        shard: int | None = None,
    ) -> int:
        """Queue an entry; when this returns (the shard it went to), it will be handled even if
        this process dies.

        With ``dedupe_id`` the entry is added to a shard at most once for ``remember_ms``;
        ``shard`` (where an earlier try may have added it) is tried first, so a retry after an
        answer that was lost adds nothing.

        Raises:
            QueueWriteInDoubt: the shard it names may hold the entry (a timeout or a WAIT
                shortfall after the write ran).
            StoreUnavailable: no shard took it (tried: up to three, skipping known-down ones).
        """
        payload = _encoder.encode(entry)
        now = time.monotonic()
        up = [s for s in self._writable if s.skip_until <= now] or self._writable
        order = random.sample(up, min(3, len(up)))
        if shard is not None:
            first = self._shards[shard]
            order = [first, *(s for s in order if s is not first)][:3]
        for attempt, target in enumerate(order):
            keys = [target.stream]
            if dedupe_id is not None:
                keys.append(self._keys.queue_once(self._name, target.index, dedupe_id))
            try:
                await self._commands.run_script(
                    self._scripts.queue_add, keys, [payload, remember_ms]
                )
            except StoreUnavailable as exc:
                if not _ran_not(exc):
                    raise QueueWriteInDoubt(target.index) from exc
                if attempt == len(order) - 1:
                    raise
                self._down(target, exc)
            else:
                return target.index
        raise StoreUnavailable("no shard of the queue could take the entry")

    async def read(self, consumer: str, count: int) -> list[QueueItem[E]]:
        """New entries for ``consumer``: about ``count`` (at most ``count`` plus one less than
        the shards read, when several have entries), without waiting.

        Raises:
            StoreUnavailable: no shard could be reached.
        """
        items: list[QueueItem[E]] = (await read_together([QueueRead(self, consumer, count)]))[0]
        return items

    def _read_parts(self, consumer: str, count: int) -> tuple[list[_Part], set[int]]:
        """The commands of a read (a part per shard), and the shards whose group they create."""
        shards = self._reachable()
        if not shards:
            return [], set()
        # Round-robin: each pass starts one shard further, so none is always served last.
        start = self._next_read % len(shards)
        self._next_read += 1
        shards = shards[start:] + shards[:start]
        each = max(1, -(-count // len(shards)))
        # Decided now: another read of this process may make the group meanwhile.
        creating = {shard.index for shard in shards if not shard.group_ready}

        def queue_read(shard: _Shard) -> list[tuple[Any, ...]]:
            read = ("XREADGROUP", "GROUP", GROUP, consumer, "COUNT", each, "STREAMS")
            commands: list[tuple[Any, ...]] = [(*read, shard.stream, ">")]
            if shard.index in creating:
                create = ("XGROUP", "CREATE", shard.stream, GROUP, "0")
                commands.insert(0, (*create, "MKSTREAM") if not shard.legacy else create)
            return commands

        return [_Part(self, shard, queue_read(shard)) for shard in shards], creating

    def _read_items(
        self, answers: list[tuple[_Part, list[Any]]], creating: set[int]
    ) -> list[QueueItem[E]]:
        """The entries a read's replies (this queue's parts of ``answers``) hand out."""
        items: list[QueueItem[E]] = []
        for part, replies in answers:
            if part.queue is not self:
                continue
            shard = part.shard
            reply = self._settle_group(shard, replies, creating=shard.index in creating)
            if isinstance(reply, BaseException):
                continue
            # RESP2 answers [[stream, entries]], RESP3 {stream: entries}.
            streams: Any = reply or []
            pairs = streams.items() if isinstance(streams, dict) else streams
            items += [
                self._item(shard, sid, fields) for _, entries in pairs for sid, fields in entries
            ]
        return items

    async def reclaim(self, consumer: str, idle_ms: int, count: int) -> list[QueueItem[E]]:
        """Entries another worker took but has not finished for ``idle_ms``: now ``consumer``'s
        (about ``count``, as in ``read``)."""
        shards = [shard for shard in self._reachable() if shard.group_ready]
        if not shards:
            return []
        each = max(1, -(-count // len(shards)))

        def queue_claim(shard: _Shard) -> _Part:
            claim = ("XAUTOCLAIM", shard.stream, GROUP, consumer, idle_ms, shard.claim_cursor)
            return _Part(self, shard, [(*claim, "COUNT", each)])

        items: list[QueueItem[E]] = []
        for part, replies in await _pipelined(self._commands, [queue_claim(s) for s in shards]):
            shard, reply = part.shard, replies[0]
            if isinstance(reply, ResponseError) and str(reply).startswith("NOGROUP"):
                shard.group_ready = False  # the stream or group is gone: made again next read
                continue
            if isinstance(reply, BaseException):
                self._failed(shard, reply)
                continue
            # Redis scans a bounded part of the pending list per call: go on from there.
            shard.claim_cursor = reply_text(reply[0])
            claimed: list[Any] = reply[1]
            items += [
                self._item(shard, sid, fields, reclaimed=True) for sid, fields in claimed if fields
            ]
        return items

    async def finish(self, item: QueueItem[E]) -> None:
        """The entry's outcome is final: forget it."""
        shard = self._shards[item.shard]
        await self._commands.run_script(
            self._scripts.queue_finish, [shard.stream], [GROUP, item.stream_id]
        )

    async def retry_later(self, consumer: str, item: QueueItem[E], entry: E, due_ms: int) -> bool:
        """Set the entry aside until ``due_ms`` (Unix ms), as ``entry``; False when it is no
        longer ``consumer``'s (another worker took it over: that one decides)."""
        shard = self._shards[item.shard]
        reply = await self._commands.run_script(
            self._scripts.queue_retry,
            [shard.stream, shard.delayed],
            [GROUP, item.stream_id, due_ms, _encoder.encode(entry), consumer],
        )
        return bool(int(reply[0]))

    async def touch(self, consumer: str, item: QueueItem[E]) -> bool:
        """Keep an entry ``consumer`` is still handling from looking idle; False if not its."""
        shard = self._shards[item.shard]
        reply = await self._commands.run_script(
            self._scripts.queue_touch, [shard.stream], [GROUP, consumer, item.stream_id]
        )
        return bool(int(reply[0]))

    async def release_due(self, limit: int) -> int:
        """Move entries whose retry is due back to their streams (up to ``limit`` per shard);
        how many moved. A shard that cannot be reached is skipped."""
        moved = 0
        for shard in self._reachable():
            try:
                reply = await self._commands.run_script(
                    self._scripts.queue_release, [shard.stream, shard.delayed], [limit]
                )
            except StoreUnavailable as exc:
                self._down(shard, exc)
                continue
            moved += int(reply[0])
        return moved

    async def erase(self, matches: Callable[[E], bool]) -> int:
        """Delete every entry, waiting or set aside for a retry, that ``matches``, in every
        shard; how many. An entry a worker holds right now may still be handled once."""
        erased = 0
        for shard in self._shards:
            erased += await self._commands.delete_stream_entries(
                shard.stream, lambda fields: self._matches(fields, matches)
            )
            async with self._commands.command() as redis:
                delayed: list[Any] = await redis.zrange(shard.delayed, 0, -1)
            doomed = [raw for raw in delayed if self._matches({b"e": raw}, matches)]
            if doomed:
                erased += await self._commands.erase("zrem", [shard.delayed], doomed)
        return erased

    async def oldest_age_ms(self, now_ms: int) -> int:
        """How long the oldest entry in any reachable shard has waited (0 when all are empty)."""
        oldest = 0
        for shard in self._reachable():
            async with self._commands.command() as redis:
                first: list[Any] = await redis.xrange(shard.stream, "-", "+", count=1) or []
            if first:
                age = now_ms - int(reply_text(first[0][0]).split("-", 1)[0])
                oldest = max(oldest, age)
        return oldest

    async def backlog(self) -> tuple[int, int]:
        """Entries in the reachable shards' streams (pending ones included) and waiting for a
        retry."""
        waiting = delayed = 0
        for shard in self._reachable():
            async with self._commands.command() as redis:
                waiting += int(await redis.xlen(shard.stream))
                delayed += int(await redis.zcard(shard.delayed))
        return waiting, delayed

    async def active_consumers(self, within_ms: int) -> int:
        """How many workers (consumer names) read any reachable shard in the last
        ``within_ms``: the fleet's size, as far as this queue can tell."""
        active: set[str] = set()
        for shard in self._reachable():
            if not shard.group_ready:
                continue
            try:
                async with self._commands.command() as redis:
                    consumers: list[Any] = await redis.xinfo_consumers(shard.stream, GROUP)
            except ResponseError:
                continue  # the stream or group is gone: made again by the next read
            active |= {reply_text(c["name"]) for c in consumers if int(c["idle"]) < within_ms}
        return len(active)

    def _reachable(self) -> list[_Shard]:
        now = time.monotonic()
        return [shard for shard in self._shards if shard.skip_until <= now]

    def _down(self, shard: _Shard, error: BaseException) -> None:
        if shard.skip_until <= time.monotonic():
            log.warning(
                "%s: shard %s cannot be reached (%s); the others go on",
                self._name,
                shard.stream,
                error.__cause__ or error,
            )
        shard.skip_until = time.monotonic() + SHARD_DOWN_SECONDS

    def _settle_group(self, shard: _Shard, replies: Sequence[Any], *, creating: bool) -> Any:
        """What a read pipeline's replies for ``shard`` (``creating``: its group first) say: its
        XREADGROUP's reply, or an exception when there is nothing to read (no group yet, the
        legacy stream is gone)."""
        if creating:
            created, replies = replies[0], replies[1:]
            if isinstance(created, ResponseError) and "requires the key to exist" in str(created):
                shard.skip_until = time.monotonic() + LEGACY_RECHECK_SECONDS  # drained: gone
                return created
            if isinstance(created, BaseException) and "BUSYGROUP" not in str(created):
                return self._failed(shard, created)
            shard.group_ready = True
        reply = replies[0]
        if isinstance(reply, ResponseError) and str(reply).startswith(("NOGROUP", "UNBLOCKED")):
            # The stream or its group is gone (a restart without persistence, a flush, a
            # failover to an empty replica): made again next time.
            shard.group_ready = False
            return reply
        if isinstance(reply, BaseException):
            return self._failed(shard, reply)
        return reply

    def _failed(self, shard: _Shard, error: BaseException) -> BaseException:
        """A command of a pipeline failed: Redis cannot serve the shard now, or the shard holds
        something else (a bug or a hand-made key, logged). Either way the shard is skipped for a
        while and the other shards, and the other queues of a shared read, go on."""
        try:
            with store_errors():
                raise error
        except StoreUnavailable as exc:
            self._down(shard, exc)
            return exc
        except Exception as exc:
            if shard.skip_until <= time.monotonic():
                log.error(
                    "%s: shard %s failed (%r); skipped for a while", self._name, shard.stream, exc
                )
            shard.skip_until = time.monotonic() + SHARD_DOWN_SECONDS
            return exc

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

    def _item(
        self,
        shard: _Shard,
        stream_id: bytes | str,
        fields: dict[Any, Any] | list[Any],
        *,
        reclaimed: bool = False,
    ) -> QueueItem[E]:
        if isinstance(fields, list):  # a raw reply: field, value, field, value, ...
            fields = dict(zip(fields[::2], fields[1::2], strict=True))
        return QueueItem(
            stream_id=reply_text(stream_id),
            entry=self._entry(fields),
            reclaimed=reclaimed,
            shard=shard.index,
        )


@dataclass(frozen=True, slots=True)
class QueueRead(Generic[E]):
    """One queue's part of a read of several: the queue, the consumer, about how many."""

    queue: QueueStore[E]
    consumer: str
    count: int


async def read_together(reads: Sequence[QueueRead[Any]]) -> list[list[QueueItem[Any]]]:
    """``QueueStore.read`` for several queues of one store at once, in one pipeline per master
    for all of them: each read's new entries, in the order of ``reads``.

    Raises:
        StoreUnavailable: no shard could be reached.
    """
    plans = [read.queue._read_parts(read.consumer, read.count) for read in reads]
    parts = [part for plan, _ in plans for part in plan]
    if not parts:
        return [[] for _ in reads]
    answers = await _pipelined(reads[0].queue._commands, parts)
    return [
        read.queue._read_items(answers, creating)
        for read, (_, creating) in zip(reads, plans, strict=True)
    ]


@dataclass(frozen=True, slots=True)
class _Part:
    """A shard's commands in a pipeline that may serve several queues."""

    queue: QueueStore[Any]
    shard: _Shard
    commands: list[tuple[Any, ...]]


async def _pipelined(commands: StoreCommands, parts: list[_Part]) -> list[tuple[_Part, list[Any]]]:
    """Each part's commands, one pipeline per master, the pipelines at once; each part's
    replies (errors as values). The shards of a master that cannot be reached are marked down
    and left out.

    Raises:
        StoreUnavailable: no master could be reached.
    """
    by_node: dict[str, list[_Part]] = {}
    for part in parts:
        by_node.setdefault(commands.node_of(part.shard.stream), []).append(part)

    async def run(group: list[_Part]) -> list[tuple[_Part, list[Any]]]:
        flat = [command for part in group for command in part.commands]
        replies = await commands.pipeline(group[0].shard.stream, flat)
        answers, at = [], 0
        for part in group:
            answers.append((part, replies[at : at + len(part.commands)]))
            at += len(part.commands)
        return answers

    groups = list(by_node.values())
    outcomes: list[list[tuple[_Part, list[Any]]] | BaseException]
    if len(groups) == 1:  # one Redis: no task for gather() to make
        try:
            outcomes = [await run(groups[0])]
        except StoreUnavailable as exc:
            outcomes = [exc]
    else:
        outcomes = await asyncio.gather(*(run(group) for group in groups), return_exceptions=True)
    answers: list[tuple[_Part, list[Any]]] = []
    failure: StoreUnavailable | None = None
    for group, outcome in zip(groups, outcomes, strict=True):
        if isinstance(outcome, StoreUnavailable):
            failure = outcome
            for part in group:
                part.queue._down(part.shard, outcome)
        elif isinstance(outcome, BaseException):
            raise outcome
        else:
            answers += outcome
    if failure is not None and not answers:
        raise failure
    return answers
