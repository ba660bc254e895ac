"""SendRates: the fleet-wide send rate limit of each provider's sender."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from otpservice.store.keys import KeySpace
    from otpservice.store.scripts import StoreCommands


class SendRates:
    """One limit for the whole fleet: every worker of every process asks the same key."""

    def __init__(self, commands: StoreCommands, keys: KeySpace) -> None:
        self._commands = commands
        self._keys = keys

    async def take(self, provider: str, per_second: float, burst: int) -> float:
        """Take one of ``provider``'s send slots: 0, or the seconds to wait before asking again."""
        reply = await self._commands.run_script(
            self._commands.scripts.take_send_slot,
            [self._keys.send_rate(provider)],
            [f"{1000 / per_second:.3f}", burst],
        )
        return int(reply[0]) / 1000
