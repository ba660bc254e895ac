"""OptOutStore: the numbers that must get no message, kept without expiry.

Each opt-out is a hash in its number's slot (the issuing and delivery scripts read it there);
an index in its own slot lists them for paging and export. The two cannot change in one
atomic step on Redis Cluster, so the index is written before a record appears and cleaned
after one goes: a crash in between leaves the index holding a number too many, which readers
skip, never one too few. Neither holds a number in clear: the index's members are keyed
digests, and the number is sealed beside each and in the record (the use case seals).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from otpservice.models import OptOut, OptOutChange
from otpservice.store.scripts import reply_text

if TYPE_CHECKING:
    from otpservice.store.keys import KeySpace
    from otpservice.store.scripts import StoreCommands


class OptOutReply(NamedTuple):
    """``opt_out.lua``'s reply: whether the opt-out changed, and whether the keyword that asked
    was a replay."""

    changed: bool
    replayed: bool


class IndexedNumber(NamedTuple):
    """A member of the opt-out index and its sealed number (``""`` for a member the release
    before wrote: the member is then the number itself)."""

    member: str
    sealed: str


class OptOutStore:
    """Records, removes, reads and lists opt-outs."""

    def __init__(self, commands: StoreCommands, keys: KeySpace) -> None:
        self._commands = commands
        self._keys = keys

    async def add(
        self,
        e164: str,
        *,
        sealed_number: str,
        source: str,
        sender: str = "",
        detail: str = "",
        since_ms: int | None = None,
        keyword_id: str = "",
    ) -> OptOutReply:
        """Opt the number out (nothing changes when it already was: the first record is kept,
        or when ``keyword_id``, the message id of the STOP that asked, was seen before).

        ``sealed_number``: the number as kept at rest. ``since_ms``: when it happened, for an
        imported opt-out; default now.
        """
        await self.index(e164, sealed_number)
        since = "" if since_ms is None else since_ms
        return await self._run(
            e164, ["add", sealed_number, source, sender, detail[:60], since], keyword_id
        )

    def member(self, e164: str) -> str:
        """The number's member of the index (what its sealed number is bound to)."""
        return self._keys.optout_member(e164)

    async def reseal(self, e164: str, sealed_number: str, *, clear_member: bool) -> None:
        """Keep the number sealed as ``sealed_number`` in its record and the index, if it is
        still opted out. ``clear_member``: it was listed by the number itself, as the release
        before lists; that member goes (the one time the number crosses the wire: the member
        holds it in clear already)."""
        reply = await self._run(e164, ["reseal", sealed_number, "", "", "", ""], "")
        if reply.changed:
            await self.index(e164, sealed_number)
        if clear_member:
            await self._change_index("remove", e164)
        if not reply.changed:
            await self.forget_unless_opted_out(e164)

    async def index(self, e164: str, sealed_number: str) -> None:
        """List the number in the index: its digest, its sealed number beside it."""
        await self._change_index("add", self._keys.optout_member(e164), sealed_number)

    async def _change_index(self, *args: str) -> None:
        """``optout_index.lua``: "add" a member and its sealed number, or "remove" members."""
        await self._commands.run_script(
            self._commands.scripts.optout_index,
            [self._keys.optout_index(), self._keys.optout_numbers()],
            list(args),
        )

    async def clear_members(self, limit: int) -> list[str]:
        """Up to ``limit`` members the release before wrote: the numbers themselves, in clear
        ("+" sorts before every character of a digest)."""
        async with self._commands.command() as redis:
            members = await redis.zrangebylex(self._keys.optout_index(), "[+", "(,", 0, limit)
        return [reply_text(m) for m in members]

    async def remove(self, e164: str, *, source: str, keyword_id: str = "") -> OptOutReply:
        """Opt the number back in (nothing changes when it was not opted out, or when
        ``keyword_id``, the message id of the START that asked, was seen before)."""
        reply = await self._run(e164, ["remove", "", source, "", "", ""], keyword_id)
        await self.forget_unless_opted_out(e164)
        return reply

    async def _run(self, e164: str, args: list[str | int], keyword_id: str) -> OptOutReply:
        digest = self._keys.keyword_digest(keyword_id) if keyword_id else ""
        reply = await self._commands.run_script(
            self._commands.scripts.opt_out,
            [
                self._keys.optout(e164),
                self._keys.optout_history(e164),
                self._keys.optout_keywords(e164),
            ],
            [*args, digest],
        )
        return OptOutReply(changed=bool(int(reply[0])), replayed=bool(int(reply[1])))

    async def forget_unless_opted_out(self, e164: str) -> bool:
        """Drop the number from the index if it has no opt-out record; whether it has one.
        Removed first and put back if a record is there after, so an opt-out landing meanwhile
        stays listed."""
        await self._change_index("remove", self._keys.optout_member(e164))
        async with self._commands.command() as redis:
            kept = await redis.hget(self._keys.optout(e164), "e")
        if kept is None:
            return False
        sealed = reply_text(kept)
        if not sealed.startswith("+"):  # else the release before wrote it, and listed it so
            await self.index(e164, sealed)
        return True

    async def get(self, e164: str) -> OptOut | None:
        """The number's opt-out, or None."""
        async with self._commands.command() as redis:
            fields = await redis.hmget(self._keys.optout(e164), ["at", "src", "snd", "d"])
        if fields[0] is None:
            return None
        at, source, sender, detail = (reply_text(v) if v is not None else "" for v in fields)
        return OptOut(phone=e164, since_ms=int(at), source=source, sender=sender, detail=detail)

    async def history(self, e164: str) -> list[OptOutChange]:
        """The number's opt-out changes, newest first."""
        async with self._commands.command() as redis:
            entries = await redis.lrange(self._keys.optout_history(e164), 0, -1)
        changes = []
        for entry in entries:
            at, direction, source, sender = reply_text(entry).split("|", 3)
            changes.append(
                OptOutChange(
                    at_ms=int(at), opted_out=direction == "out", source=source, sender=sender
                )
            )
        return changes

    async def page(self, after: str, limit: int) -> tuple[list[IndexedNumber], str | None]:
        """Up to ``limit`` members of the index after ``after`` ("" from the start), each with
        its sealed number, and the cursor of the next page (None at the end)."""
        async with self._commands.command() as redis:
            members = await redis.zrangebylex(
                self._keys.optout_index(), f"({after}" if after else "-", "+", 0, limit + 1
            )
            names = [reply_text(m) for m in members]
            # One more than asked for says whether another page follows.
            following = names[limit - 1] if len(names) > limit else None
            names = names[:limit]
            sealed = await redis.hmget(self._keys.optout_numbers(), names) if names else []
        return [
            IndexedNumber(member=name, sealed=reply_text(value) if value is not None else "")
            for name, value in zip(names, sealed, strict=True)
        ], following
