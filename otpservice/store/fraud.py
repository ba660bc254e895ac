"""FraudGuardStore: codes sent and verified per destination and per source, in shards, and the
tripped set.

A destination is a calling code ("+44") or a number prefix ("+4470"); a source is an API client
and an end-user network (keyed). A country, its prefixes and their sources share each shard's
slot, so counting or reading a number's destinations is one call per shard. Besides the
window, each destination keeps its last seven days (the baseline its conversion is judged
against). Each process adds its batched counts to one shard of its own
(``FRAUD_SHARDS`` of them, chosen at random), so no single slot takes every process's writes;
the fraud guard's loop sums the shards. Which destinations are tripped is one hash the loops of
every process read and write; requests read only the loop's copy in memory.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec

from otpservice.errors import StoreUnavailable
from otpservice.models import FraudScope, Model
from otpservice.store.scripts import reply_text

if TYPE_CHECKING:
    from otpservice.store.keys import KeySpace
    from otpservice.store.scripts import StoreCommands

# Shards of each country's counts: the loop reads them all, each process writes one.
FRAUD_SHARDS = 4


class FraudCounts(Model, frozen=True):
    """A destination's codes sent and verified over the window, summed over the shards, and
    over the last seven whole days (its baseline)."""

    destination: str
    sent: int
    verified: int
    # Unix second when its oldest counted bucket leaves the window (0: nothing counted).
    oldest_leaves_at_s: int
    baseline_sent: int = 0
    baseline_verified: int = 0
    # How many of those seven days hold counts (0: no baseline yet).
    baseline_days: int = 0


class SourceCounts(Model, frozen=True):
    """Codes one source sent and verified in a flush: a source is a keyed digest of an API
    client and an end-user network (``KeySpace.fraud_source``)."""

    source: str
    sent: int = 0
    verified: int = 0


class FraudTrip(Model, frozen=True):
    """A tripped destination, as recorded for the fleet: its figures, when the oldest codes
    counted against it leave the window (the soonest it can clear by itself), and whom it
    refuses: everyone, or only the sources listed (a prefix's few contributing sources)."""

    destination: str
    sent: int
    verified: int
    until_s: int
    # A record of the release before has neither: it refused everyone.
    scope: FraudScope = "everyone"
    sources: list[str] = msgspec.field(default_factory=list)


class _ShardCounts(NamedTuple):
    """One destination of ``fraud_counts.lua``'s "read" reply."""

    sent: int
    verified: int
    oldest_leaves_at_s: int
    baseline_sent: int
    baseline_verified: int
    # Bit k: the day k + 1 days ago holds counts in this shard.
    baseline_days: int


_trip_encoder = msgspec.msgpack.Encoder()
_trip_decoder = msgspec.msgpack.Decoder(FraudTrip)


class FraudGuardStore:
    """Counts into this process's shard, sums all shards, and keeps the tripped set."""

    def __init__(self, commands: StoreCommands, keys: KeySpace, shard: int | None = None) -> None:
        self._commands = commands
        self._keys = keys
        self._shard = random.randrange(FRAUD_SHARDS) if shard is None else shard  # noqa: S311

    def source(self, client: str, network: str) -> str:
        """The source a request from ``network`` (its /24 or /64, "" for none) through API
        client ``client`` counts as: a keyed digest, so no address is stored."""
        return self._keys.fraud_source(client, network)

    async def add(
        self,
        country: str,
        destinations: list[str],
        window_seconds: int,
        *,
        sent: int,
        verified: int,
        sources: list[SourceCounts],
        now_s: int,
    ) -> None:
        """Count codes sent to and verified by each destination of ``country`` (the prefix
        last), and by each source for the prefix, in this process's shard."""
        per_source = [v for c in sources for v in (c.source, c.sent, c.verified)]
        head = ["add", window_seconds, now_s, sent, verified, len(destinations)]
        await self._run(
            self._shard_keys(country, self._shard, destinations[-1]),
            [*head, *destinations, *per_source],
        )

    async def counts(
        self, country: str, destinations: list[str], window_seconds: int, *, now_s: int
    ) -> list[FraudCounts]:
        """Each destination's counts over the window and its baseline, summed over the shards
        that answer.

        Raises:
            StoreUnavailable: no shard answered.
        """
        totals = {d: [0] * 6 for d in destinations}
        for reply in await self._every_shard(
            country, None, ["read", window_seconds, now_s, *destinations]
        ):
            for destination, answer in zip(destinations, reply, strict=True):
                found = _ShardCounts(*(int(value) for value in answer))
                total = totals[destination]
                total[0] += found.sent
                total[1] += found.verified
                if found.oldest_leaves_at_s and (
                    not total[2] or found.oldest_leaves_at_s < total[2]
                ):
                    total[2] = found.oldest_leaves_at_s
                total[3] += found.baseline_sent
                total[4] += found.baseline_verified
                total[5] |= found.baseline_days  # the days any shard holds
        return [
            FraudCounts(
                destination=d,
                sent=t[0],
                verified=t[1],
                oldest_leaves_at_s=t[2],
                baseline_sent=t[3],
                baseline_verified=t[4],
                baseline_days=t[5].bit_count(),
            )
            for d, t in totals.items()
        ]

    async def by_source(
        self, country: str, prefix: str, window_seconds: int, *, now_s: int
    ) -> dict[str, SourceCounts]:
        """Each source's codes sent to and verified for ``prefix`` over the window, summed over
        the shards that answer (a code sent through one process may be verified through
        another, so the two are summed apart before anyone subtracts).

        Raises:
            StoreUnavailable: no shard answered.
        """
        sent: dict[str, int] = {}
        verified: dict[str, int] = {}
        for reply in await self._every_shard(
            country, prefix, ["sources", window_seconds, now_s, prefix]
        ):
            for member, count in zip(reply[::2], reply[1::2], strict=True):
                kind, _, source = reply_text(member).partition(":")
                into = sent if kind == "s" else verified
                into[source] = into.get(source, 0) + int(count)
        return {
            source: SourceCounts(source=source, sent=n, verified=verified.get(source, 0))
            for source, n in sent.items()
        }

    async def clear_counts(
        self, country: str, destination: str, window_seconds: int, *, now_s: int
    ) -> None:
        """Forget a destination's window counts and sources in every shard (an operator
        cleared it); its baseline is history and stays."""
        for shard in range(FRAUD_SHARDS):
            await self._run(
                self._shard_keys(country, shard, destination),
                ["clear", window_seconds, now_s, destination],
            )

    def _shard_keys(self, country: str, shard: int, prefix: str | None) -> list[str]:
        """A shard's counts and, for ``prefix``, its source sets (one slot, one script)."""
        counts = self._keys.fraud_counts(country, shard)
        if prefix is None:
            return [counts]
        return [counts, *self._keys.fraud_sources(country, shard, prefix)]

    async def _every_shard(
        self, country: str, prefix: str | None, args: list[Any]
    ) -> list[list[Any]]:
        """``fraud_counts.lua``'s reply from every shard that answers (a shard whose master is
        down is missing from the sums until it is back).

        Raises:
            StoreUnavailable: no shard answered.
        """
        replies = []
        for shard in range(FRAUD_SHARDS):
            try:
                replies.append(await self._run(self._shard_keys(country, shard, prefix), args))
            except StoreUnavailable:
                continue
        if not replies:
            raise StoreUnavailable("no shard of the fraud guard's counts could be reached")
        return replies

    async def _run(self, keys: list[str], args: list[Any]) -> list[Any]:
        return await self._commands.run_script(self._commands.scripts.fraud_counts, keys, args)

    async def tripped(self) -> dict[str, FraudTrip]:
        """Every tripped destination."""
        async with self._commands.command() as redis:
            raw: dict[Any, Any] = await redis.hgetall(self._keys.fraud_tripped())
        trips = {}
        for name, value in raw.items():
            if "|" in reply_text(name):
                continue  # a trip's scope, beside it
            try:
                trip = _trip_decoder.decode(value)
            except msgspec.DecodeError:
                continue  # written by something else: not ours to act on
            trips[trip.destination] = trip
        return trips

    async def trip(self, trip: FraudTrip) -> bool:
        """Record a destination as tripped (its figures refreshed if it was); True when it was
        not tripped before, or tripped for other people."""
        return await self._change(
            "trip", trip.destination, _trip_encoder.encode(trip), trip.scope.encode()
        )

    async def untrip(self, destination: str) -> bool:
        """Record a destination as no longer tripped; True when it was tripped."""
        return await self._change("clear", destination, b"")

    async def _change(self, op: str, destination: str, value: bytes, scope: bytes = b"") -> bool:
        reply = await self._commands.run_script(
            self._commands.scripts.fraud_trip,
            [self._keys.fraud_tripped()],
            [op, destination, value, scope],
        )
        return bool(int(reply[0]))
