"""StatsStore: analytics counters, one hash per hour (its own slot), kept for a set time."""

from __future__ import annotations

from typing import TYPE_CHECKING

from otpservice.store.scripts import reply_text

if TYPE_CHECKING:
    from otpservice.store.keys import KeySpace
    from otpservice.store.scripts import StoreCommands


class StatsStore:
    """Adds to and reads the hourly counters."""

    def __init__(self, commands: StoreCommands, keys: KeySpace) -> None:
        self._commands = commands
        self._keys = keys

    async def add(self, hour: int, counts: dict[str, int], keep_seconds: int) -> None:
        """Add ``counts`` (field -> amount) to the hour ``hour`` (Unix hours)."""
        args: list[str | int] = [keep_seconds]
        for name, amount in counts.items():
            args += [name, amount]
        await self._commands.run_script(
            self._commands.scripts.add_counts, [self._keys.stats(hour)], args
        )

    async def read(self, hours: range) -> dict[int, dict[str, int]]:
        """The counters of each hour in ``hours`` that has any."""
        found: dict[int, dict[str, int]] = {}
        for hour in hours:
            async with self._commands.command() as redis:
                fields = await redis.hgetall(self._keys.stats(hour))
            if fields:
                found[hour] = {reply_text(k): int(v) for k, v in fields.items()}
        return found
