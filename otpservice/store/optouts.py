"""OptOutStore: the numbers that must get no message, kept without expiry."""

from __future__ import annotations

from typing import TYPE_CHECKING

from otpservice.models import OptOut
from otpservice.store.scripts import reply_text

if TYPE_CHECKING:
    from otpservice.store.keys import KeySpace
    from otpservice.store.scripts import StoreCommands


class OptOutStore:
    """Records, removes and reads opt-outs (one hash per number, in the number's slot)."""

    def __init__(self, commands: StoreCommands, keys: KeySpace) -> None:
        self._commands = commands
        self._keys = keys

    async def add(self, e164: str, *, source: str, sender: str = "", detail: str = "") -> bool:
        """Opt the number out; False when it already was (the first record is kept)."""
        reply = await self._commands.run_script(
            self._commands.scripts.opt_out,
            [self._keys.optout(e164)],
            ["add", e164, source, sender, detail[:60]],
        )
        return bool(int(reply[0]))

    async def remove(self, e164: str) -> bool:
        """Opt the number back in; False when it was not opted out."""
        reply = await self._commands.run_script(
            self._commands.scripts.opt_out, [self._keys.optout(e164)], ["remove", e164, "", "", ""]
        )
        return bool(int(reply[0]))

    async def get(self, e164: str) -> OptOut | None:
        """The number's opt-out, or None."""
        async with self._commands.command() as redis:
            fields = await redis.hmget(self._keys.optout(e164), ["e", "at", "src", "snd", "d"])
        if fields[0] is None:
            return None
        phone, at, source, sender, detail = (reply_text(v) if v is not None else "" for v in fields)
        return OptOut(phone=phone, since_ms=int(at), source=source, sender=sender, detail=detail)
