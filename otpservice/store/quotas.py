"""QuotaStore: the rolling-window budgets of the abuse rules, one key (and slot) per subject.

A request counts against several rules whose keys live on different slots, so each rule is
one atomic step of its own; a request refused by a later step gives back what the earlier
ones counted (``give_back``), so a refused request consumes nothing.

A rule with a large limit would put one hot key on one master for every request (the global,
per-country and per-client rules are the same key for everyone). Such a rule is split into
``n = min(shards, max(1, L // 20))`` shards, with L its smallest window limit: each shard is a
key of its own slot holding ``L // n`` or ``L // n + 1`` of every window's limit, the shares
summing to exactly the limit, so the shards together never admit more than the rule does. A
request takes a random shard; if that one is full it tries up to two more at once (one more
round trip) and keeps the first that counts. It can be refused while another shard still has
room: near the limit a sharded rule admits a little less than L, never more. A shard that
cannot be reached is skipped for another.
"""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING

from otpservice.errors import StoreUnavailable
from otpservice.models import Model

if TYPE_CHECKING:
    from otpservice.config.schema import RateRule
    from otpservice.store.keys import KeySpace
    from otpservice.store.scripts import StoreCommands

# Per shard at least this many requests in the smallest window: fewer would make the shares
# too coarse (a shard full while the rule has plenty of room).
MIN_PER_SHARD = 20
# Shards tried after the first one is full, in parallel.
MORE_TRIES = 2


class QuotaTaken(Model, frozen=True):
    """What one rule said: counted (``full`` False), refused, or counted in monitor mode."""

    key: str
    counted: bool
    full: bool
    retry_after_ms: int = 0


def shard_count(rule: RateRule, shards: int) -> int:
    """How many shards ``rule`` is split into (1: not sharded, the plain key)."""
    smallest = min(window.limit for window in rule.windows)
    return min(shards, max(1, smallest // MIN_PER_SHARD))


def shard_limits(rule: RateRule, count: int, shard: int) -> list[int]:
    """Shard ``shard``'s share of each window's limit; the shares of all shards sum to it."""
    return [
        window.limit // count + (1 if shard < window.limit % count else 0)
        for window in rule.windows
    ]


class QuotaStore:
    """Counts requests against rules' windows (on one key, or on one of a rule's shards) and
    gives them back."""

    def __init__(self, commands: StoreCommands, keys: KeySpace, *, shards: int = 1) -> None:
        self._commands = commands
        self._keys = keys
        self._shards = shards

    def keys(self, rule: RateRule, subject: str) -> list[str]:
        """Every key of ``rule``'s budget for ``subject``: one, or one per shard."""
        count = shard_count(rule, self._shards)
        if count == 1:
            return [self._keys.quota(rule.name, subject)]
        return [self._keys.quota(rule.name, subject, shard) for shard in range(count)]

    async def take(self, rule: RateRule, subject: str, request_id: str) -> QuotaTaken:
        """Count ``request_id`` against ``rule`` for ``subject`` unless a window is full (in
        monitor mode it is counted anyway)."""
        count = shard_count(rule, self._shards)
        if count == 1:
            key = self._keys.quota(rule.name, subject)
            limits = [window.limit for window in rule.windows]
            return await self._take(key, rule, limits, request_id, rule.mode)
        order = random.sample(range(count), min(count, 1 + MORE_TRIES))
        tried = [
            (self._keys.quota(rule.name, subject, s), shard_limits(rule, count, s)) for s in order
        ]
        first = await self._try([tried[0]], rule, request_id)
        if first and first[0].counted:
            return first[0]
        more = await self._try(tried[1:], rule, request_id)
        if not first and not more:
            # None of them answered (their masters failing over): every other shard at once.
            rest = [s for s in range(count) if s not in order]
            tried += [
                (self._keys.quota(rule.name, subject, s), shard_limits(rule, count, s))
                for s in rest
            ]
            more = await self._try(tried[len(order) :], rule, request_id)
        counted = [taken for taken in more if taken.counted]
        # Several shards may have counted it: keep one, give the others back.
        for extra in counted[1:]:
            await self.give_back(extra.key, request_id)
        if counted:
            return counted[0]
        refusals = [taken for taken in (*first, *more) if taken.full]
        if not refusals:
            raise StoreUnavailable("no shard of the rule could be reached")
        soonest = min(refusals, key=lambda taken: taken.retry_after_ms)
        if rule.mode == "monitor":
            # Every shard tried is full: count it anyway, as an unsharded rule would.
            key, limits = tried[0]
            return await self._take(key, rule, limits, request_id, "monitor")
        return soonest

    async def _try(
        self, shards: list[tuple[str, list[int]]], rule: RateRule, request_id: str
    ) -> list[QuotaTaken]:
        """Try these shards at once, refusing when full (monitor mode is decided by ``take``).
        A shard that cannot be reached gives no answer."""
        outcomes = await asyncio.gather(
            *(self._take(key, rule, limits, request_id, "enforce") for key, limits in shards),
            return_exceptions=True,
        )
        answers = []
        for outcome in outcomes:
            if isinstance(outcome, StoreUnavailable):
                continue
            if isinstance(outcome, BaseException):
                raise outcome
            answers.append(outcome)
        return answers

    async def _take(
        self, key: str, rule: RateRule, limits: list[int], request_id: str, mode: str
    ) -> QuotaTaken:
        args: list[str | int] = [request_id, mode]
        for window, limit in zip(rule.windows, limits, strict=True):
            args += [window.seconds * 1000, limit]
        reply = await self._commands.run_script(self._commands.scripts.take_quota, [key], args)
        outcome = int(reply[0])
        if outcome == 1:
            return QuotaTaken(key=key, counted=True, full=False)
        return QuotaTaken(key=key, counted=outcome == 2, full=True, retry_after_ms=int(reply[1]))

    async def give_back(self, key: str, request_id: str) -> None:
        """Uncount a request (a later rule or step refused it)."""
        async with self._commands.command() as redis:
            await redis.zrem(key, request_id)
