"""InboundStore: what the service remembers of replies, all in the replying number's slot."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from otpservice.store.keys import KeySpace
    from otpservice.store.scripts import StoreCommands

# Providers repeat a webhook for up to a day (Event Grid: 24 h); a repeat after that is new.
SEEN_SECONDS = 24 * 3600


class InboundStore:
    """Remembers handled replies (so a repeat changes nothing) and the keyword answers sent."""

    def __init__(self, commands: StoreCommands, keys: KeySpace) -> None:
        self._commands = commands
        self._keys = keys

    async def seen(self, e164: str, message_id: str) -> bool:
        """Whether the reply ``message_id`` from ``e164`` was handled already."""
        async with self._commands.command() as redis:
            return bool(await redis.exists(self._keys.inbound_seen(e164, message_id)))

    async def mark_seen(self, e164: str, message_id: str) -> None:
        """Remember that the reply was handled (after handling it: a crash half-way leaves it to
        the provider's repeat, and every step is safe to repeat)."""
        async with self._commands.command() as redis:
            await redis.set(self._keys.inbound_seen(e164, message_id), 1, ex=SEEN_SECONDS)

    async def claim_reply(self, e164: str, keyword: str, window_seconds: int) -> bool:
        """True for the first answer to ``keyword`` from ``e164`` within the window."""
        async with self._commands.command() as redis:
            return bool(
                await redis.set(self._keys.reply_guard(e164, keyword), 1, nx=True,
                                ex=window_seconds)
            )  # fmt: skip
