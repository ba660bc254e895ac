"""QuotaStore: the rolling-window budgets of the abuse rules, one key (and slot) per subject.

A request counts against several rules whose keys live on different slots, so each rule is
one atomic step of its own; a request refused by a later step gives back what the earlier
ones counted (``give_back``), so a refused request consumes nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from otpservice.models import Model

if TYPE_CHECKING:
    from otpservice.config.schema import RateRule
    from otpservice.store.keys import KeySpace
    from otpservice.store.scripts import StoreCommands


class QuotaTaken(Model, frozen=True):
    """What one rule said: counted (``full`` False), refused, or counted in monitor mode."""

    key: str
    counted: bool
    full: bool
    retry_after_ms: int = 0


class QuotaStore:
    """Counts requests against rules' windows and gives them back."""

    def __init__(self, commands: StoreCommands, keys: KeySpace) -> None:
        self._commands = commands
        self._keys = keys

    def key(self, rule: RateRule, subject: str) -> str:
        """The key of ``rule``'s budget for ``subject``."""
        return self._keys.quota(rule.name, subject)

    async def take(self, rule: RateRule, subject: str, request_id: str) -> QuotaTaken:
        """Count ``request_id`` against ``rule`` for ``subject`` unless a window is full (in
        monitor mode it is counted anyway)."""
        key = self.key(rule, subject)
        args: list[str | int] = [request_id, rule.mode]
        for window in rule.windows:
            args += [window.seconds * 1000, window.limit]
        reply = await self._commands.run_script(self._commands.scripts.take_quota, [key], args)
        outcome = int(reply[0])
        if outcome == 1:
            return QuotaTaken(key=key, counted=True, full=False)
        return QuotaTaken(key=key, counted=outcome == 2, full=True, retry_after_ms=int(reply[1]))

    async def give_back(self, key: str, request_id: str) -> None:
        """Uncount a request (a later rule or step refused it)."""
        async with self._commands.command() as redis:
            await redis.zrem(key, request_id)
