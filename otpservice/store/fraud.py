"""FraudGuardStore: codes sent and verified per destination, in shards, and the tripped set.

A destination is a calling code ("+44") or a number prefix ("+4470"). A country and its
prefixes share each shard's hash (one slot), so counting or reading a number's two destinations
is one call per shard. Each process adds its batched counts to one shard of its own
(``FRAUD_SHARDS`` of them, chosen at random), so no single slot takes every process's writes;
the fraud guard's loop sums the shards. Which destinations are tripped is one hash the loops of
every process read and write; requests read only the loop's copy in memory.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

import msgspec

from otpservice.errors import StoreUnavailable
from otpservice.models import Model

if TYPE_CHECKING:
    from otpservice.store.keys import KeySpace
    from otpservice.store.scripts import StoreCommands

# Shards of each country's counts: the loop reads them all, each process writes one.
FRAUD_SHARDS = 4


class FraudCounts(Model, frozen=True):
    """A destination's codes sent and verified over the window, summed over the shards."""

    destination: str
    sent: int
    verified: int
    # Unix second when its oldest counted bucket leaves the window (0: nothing counted).
    oldest_leaves_at_s: int


class FraudTrip(Model, frozen=True):
    """A tripped destination, as recorded for the fleet: its figures and when the oldest codes
    counted against it leave the window (the soonest it can clear by itself)."""

    destination: str
    sent: int
    verified: int
    until_s: int


_trip_encoder = msgspec.msgpack.Encoder()
_trip_decoder = msgspec.msgpack.Decoder(FraudTrip)


class FraudGuardStore:
    """Counts into this process's shard, sums all shards, and keeps the tripped set."""

    def __init__(self, commands: StoreCommands, keys: KeySpace, shard: int | None = None) -> None:
        self._commands = commands
        self._keys = keys
        self._shard = random.randrange(FRAUD_SHARDS) if shard is None else shard  # noqa: S311

    async def add(
        self,
        country: str,
        destinations: list[str],
        window_seconds: int,
        *,
        sent: int,
        verified: int,
    ) -> None:
        """Count codes sent to and verified by each destination of ``country``, in this
        process's shard."""
        await self._run(
            self._keys.fraud_counts(country, self._shard),
            ["add", window_seconds, sent, verified, *destinations],
        )

    async def counts(
        self, country: str, destinations: list[str], window_seconds: int
    ) -> list[FraudCounts]:
        """Each destination's counts over the window, summed over the shards that answer.

        Raises:
            StoreUnavailable: no shard answered.
        """
        totals = {d: [0, 0, 0] for d in destinations}
        answered = False
        for shard in range(FRAUD_SHARDS):
            try:
                reply = await self._run(
                    self._keys.fraud_counts(country, shard),
                    ["read", window_seconds, 0, 0, *destinations],
                )
            except StoreUnavailable:
                continue  # its counts are missing until its master is back
            answered = True
            for destination, (sent, verified, leaves_at) in zip(destinations, reply, strict=True):
                total = totals[destination]
                total[0] += int(sent)
                total[1] += int(verified)
                if int(leaves_at) and (not total[2] or int(leaves_at) < total[2]):
                    total[2] = int(leaves_at)
        if not answered:
            raise StoreUnavailable("no shard of the fraud guard's counts could be reached")
        return [
            FraudCounts(destination=d, sent=s, verified=v, oldest_leaves_at_s=t)
            for d, (s, v, t) in totals.items()
        ]

    async def clear_counts(self, country: str, destination: str, window_seconds: int) -> None:
        """Forget a destination's counts in every shard (an operator cleared it)."""
        for shard in range(FRAUD_SHARDS):
            await self._run(
                self._keys.fraud_counts(country, shard),
                ["clear", window_seconds, 0, 0, destination],
            )

    async def tripped(self) -> dict[str, FraudTrip]:
        """Every tripped destination."""
        async with self._commands.command() as redis:
            raw: dict[Any, Any] = await redis.hgetall(self._keys.fraud_tripped())
        trips = {}
        for value in raw.values():
            try:
                trip = _trip_decoder.decode(value)
            except msgspec.DecodeError:
                continue  # written by something else: not ours to act on
            trips[trip.destination] = trip
        return trips

    async def trip(self, trip: FraudTrip) -> bool:
        """Record a destination as tripped (its figures refreshed if it was); True when it was
        not tripped before."""
        return await self._change("trip", trip.destination, _trip_encoder.encode(trip))

    async def untrip(self, destination: str) -> bool:
        """Record a destination as no longer tripped; True when it was tripped."""
        return await self._change("clear", destination, b"")

    async def _change(self, op: str, destination: str, value: bytes) -> bool:
        reply = await self._commands.run_script(
            self._commands.scripts.fraud_trip,
            [self._keys.fraud_tripped()],
            [op, destination, value],
        )
        return bool(int(reply[0]))

    async def _run(self, key: str, args: list[Any]) -> list[Any]:
        return await self._commands.run_script(self._commands.scripts.fraud_counts, [key], args)
