"""SendRates: the fleet-wide send rate limit of each provider's sender."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from otpservice.store.keys import KeySpace
    from otpservice.store.scripts import StoreCommands


class SendSlot(NamedTuple):
    """The reply of ``take_send_slot.lua``."""

    # 0 when a slot was taken, else how long to wait before asking again.
    wait_seconds: float
    # The slot taken, on the Redis server's clock (ms); 0 when none was.
    slot_ms: int

    @property
    def granted(self) -> bool:
        """Whether a slot was taken: the message may go now."""
        return self.wait_seconds == 0


class SendRates:
    """One limit for the whole fleet: every worker of every process asks the same key."""

    def __init__(self, commands: StoreCommands, keys: KeySpace) -> None:
        self._commands = commands
        self._keys = keys

    async def take(self, provider: str, per_second: float, burst: int) -> SendSlot:
        """Take one of ``provider``'s send slots, or say how long to wait for one."""
        wait_ms, slot_ms = await self._commands.run_script(
            self._commands.scripts.take_send_slot,
            [self._keys.send_rate(provider)],
            [f"{1000 / per_second:.3f}", burst],
        )
        return SendSlot(int(wait_ms) / 1000, int(slot_ms))
