"""Abuse defences beyond one number: the rules the security team tunes (``abuse.*``).

Before a challenge is issued, in this order:

1. The safe list: numbers and prefixes exempt from everything below (the per-number limits,
   the lockout and the attempt budget still apply).
2. Geo permissions: allowed and denied countries and prefixes, and number types
   (premium rate, shared cost, unknown by default). Refused: ``403 destination_not_allowed``.
3. The fraud guard: when few codes sent to the number's country or prefix were verified over
   the window, new ones there are refused (``429 suspected_fraud``) until the ratio recovers
   or an operator clears it. A request reads only memory: counts are batched per process and
   added to the process's shard, and a loop (``refresh_fraud_guard``, every
   ``FRAUD_LOOP_SECONDS``) sums the shards of the destinations in use or tripped, records trips
   and clears for the fleet, and keeps the tripped set in memory.
4. The rate rules (per IP, IP prefix, number prefix, country, client, global): each counts the
   request in its own Redis slot, all at once; if any is full the others give theirs back, so
   a refused request consumes nothing (``429 rate_limited`` with the rule's name).

A rule in ``monitor`` mode counts and logs what it would refuse, and refuses nothing. The
settings are read per request from ``LiveSettings``, so a reloaded config applies at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from otpservice.errors import (
    DestinationNotAllowed,
    InvalidInput,
    RateLimited,
    SuspectedFraud,
    Unavailable,
)
from otpservice.metrics import FRAUD_TRIPS
from otpservice.models import NOWHERE, Destination, ceil_seconds
from otpservice.phone import calling_code_of
from otpservice.store.fraud import FraudTrip

if TYPE_CHECKING:
    from otpservice.config.live import LiveSettings
    from otpservice.config.schema import FraudGuardSettings, GeoSettings, RateRule, SafeList
    from otpservice.phone import PhoneNumber
    from otpservice.store.fraud import FraudCounts, FraudGuardStore
    from otpservice.store.quotas import QuotaStore
    from otpservice.usecases.events import AppEvents

log = logging.getLogger("otpservice.abuse")  # a log field: kept as named before the move

# How often the fraud guard's loop writes this process's counts and reads the fleet's.
FRAUD_LOOP_SECONDS = 0.5


@dataclass(frozen=True, slots=True)
class FraudState:
    """A destination's conversion over the fraud guard's window, and whether it is tripped."""

    destination: str
    tripped: bool
    sent: int
    verified: int


@dataclass(frozen=True, slots=True)
class Admission:
    """A request the rules let through: what it counted, to give back if it goes no further."""

    request_id: str
    where: Destination  # stored with its challenge
    counted: list[str] = field(default_factory=list)  # quota keys
    destinations: list[str] = field(default_factory=list)  # watched by the fraud guard


def where_of(number: PhoneNumber, prefix_digits: int) -> Destination:
    """The number's region, calling code and prefix, as a challenge keeps them."""
    return Destination(
        region=number.region,
        calling_code=f"+{number.country_code}",
        prefix=number.prefix(prefix_digits),
    )


def is_safe(safe_list: SafeList, number: PhoneNumber) -> bool:
    """Whether the number is on the safe list."""
    return number.e164 in safe_list.numbers or number.e164.startswith(tuple(safe_list.prefixes))


def geo_refusal(geo: GeoSettings, number: PhoneNumber) -> tuple[str, str] | None:
    """Why geo permissions refuse the number, as (rule, detail), or None."""
    if number.e164.startswith(tuple(geo.deny_prefixes)):
        return "geo_prefix", "codes are not sent to this number range"
    # An allowed prefix lifts a country refusal, never a number-type one (premium rate
    # numbers inside an allowed range are SMS pumping's favourite).
    if not number.e164.startswith(tuple(geo.allow_prefixes)) and (
        number.region in geo.deny_countries
        or (geo.allow_countries and number.region not in geo.allow_countries)
    ):
        return "geo_country", f"codes are not sent to numbers of {number.region}"
    if number.number_type in geo.deny_number_types:
        return "geo_number_type", f"codes are not sent to {number.number_type} numbers"
    return None


def client_address(client_ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The end user's address (already checked by the caller), an IPv4-mapped IPv6 address as
    its IPv4 address: the same user, however the app wrote it."""
    address = ipaddress.ip_address(client_ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def rule_subject(
    rule: RateRule,
    number: PhoneNumber,
    *,
    client: str,
    address: ipaddress.IPv4Address | ipaddress.IPv6Address | None,
) -> str | None:
    """What ``rule`` counts this request against (``address``: see ``client_address``), or
    None when it does not apply."""
    if rule.scope == "global":
        return "all"
    if rule.scope == "client":
        return client
    if rule.scope == "country":
        return f"+{number.country_code}"
    if rule.scope == "prefix":
        return number.prefix(rule.prefix_digits)
    if address is None:
        return None
    if rule.scope == "ip":
        return str(address)
    bits = rule.ipv4_prefix if address.version == 4 else rule.ipv6_prefix
    return str(ipaddress.ip_network(f"{address}/{bits}", strict=False))


def _country(destination: str) -> str:
    country = calling_code_of(destination)
    if country is None:
        raise InvalidInput(
            f"{destination!r} starts with no calling code", code="invalid_destination"
        )
    return country


class AbusePolicy:
    """Applies the abuse settings in force to each new challenge."""

    def __init__(
        self,
        live: LiveSettings,
        *,
        quotas: QuotaStore,
        fraud: FraudGuardStore,
        events: AppEvents,
    ) -> None:
        self._live = live
        self._quotas = quotas
        self._fraud = fraud
        self._events = events
        # Fraud guard counts not written yet, by destinations: [sent, verified].
        self._pending: dict[tuple[str, ...], list[int]] = {}
        # The destinations of each country this process sent to, and when last (monotonic):
        # the loop sums their counts until a window has passed without one.
        self._watched: dict[tuple[str, ...], float] = {}
        # The fleet's tripped destinations, as the loop last read them.
        self._tripped: dict[str, FraudTrip] = {}

    async def admit(self, number: PhoneNumber, *, client: str, client_ip: str | None) -> Admission:
        """Check and count a new challenge for ``number``.

        Raises:
            DestinationNotAllowed, SuspectedFraud, RateLimited: nothing was counted.
        """
        abuse = self._live.current.abuse
        guard = abuse.fraud_guard
        where = where_of(number, guard.prefix_digits)
        request_id = secrets.token_urlsafe(9)
        if is_safe(abuse.safe_list, number):
            # Kept out of the fraud guard's counts, sent and verified alike.
            return Admission(request_id, Destination(region=number.region))
        refusal = geo_refusal(abuse.geo, number)
        if refusal is not None:
            rule, detail = refusal
            if abuse.geo.mode == "enforce":
                raise DestinationNotAllowed(rule, detail)
            log.info("monitor: rule %s would refuse a challenge (%s)", rule, number.region)
        destinations = where.watched() if guard.enabled else []
        if destinations:
            self._check_fraud(destinations, guard)
        counted = await self._count(abuse.rules, number, client, client_ip, request_id)
        return Admission(request_id, where, counted, destinations)

    async def give_back(self, admission: Admission) -> None:
        """The challenge was not issued after all: uncount it (best effort)."""
        with contextlib.suppress(Unavailable):
            await asyncio.gather(
                *(self._quotas.give_back(key, admission.request_id) for key in admission.counted)
            )

    def issued(self, admission: Admission) -> None:
        """Count a code sent, for the fraud guard (written within ``FLUSH_SECONDS``)."""
        self._count_fraud(admission.destinations, "sent")

    def issued_after_doubt(self, number: PhoneNumber) -> None:
        """Count a code sent by the retry that finished a request answered 503 in doubt (the
        first try stopped before ``issued``), as ``issued`` would have."""
        abuse = self._live.current.abuse
        guard = abuse.fraud_guard
        if guard.enabled and not is_safe(abuse.safe_list, number):
            self._count_fraud(where_of(number, guard.prefix_digits).watched(), "sent")

    def verified(self, where: Destination) -> None:
        """Count a code verified for the number ``where`` (as stored with its challenge)."""
        if self._live.current.abuse.fraud_guard.enabled:
            self._count_fraud(where.watched(), "verified")

    async def fraud_state(self, destination: str) -> FraudState:
        """The fraud guard's figures and state for a destination ("+44" or "+4470"), read
        from the store now.

        Raises:
            InvalidInput: ``invalid_destination``: no calling code starts it.
        """
        guard = self._live.current.abuse.fraud_guard
        [counts] = await self._fraud.counts(
            _country(destination), [destination], guard.window_seconds
        )
        tripped = destination in await self._fraud.tripped()
        return FraudState(destination, tripped, counts.sent, counts.verified)

    async def clear_fraud(self, destination: str) -> bool:
        """An operator clears a destination: its counts start again. Whether it was tripped.

        Raises:
            InvalidInput: ``invalid_destination``.
        """
        guard = self._live.current.abuse.fraud_guard
        await self._fraud.clear_counts(_country(destination), destination, guard.window_seconds)
        was_tripped = await self._fraud.untrip(destination)
        self._tripped.pop(destination, None)
        if was_tripped:
            log.warning("fraud guard cleared for %s by an operator", destination)
            await self._events.fraud_changed(
                destination, tripped=False, sent=0, verified=0, source="admin"
            )
        return was_tripped

    def _count_fraud(self, destinations: list[str], what: str) -> None:
        """Add to the counts that the loop writes: a request does not wait for a Redis round
        trip for them (they only move a ratio over an hour)."""
        if destinations:
            counts = self._pending.setdefault(tuple(destinations), [0, 0])
            counts[0 if what == "sent" else 1] += 1

    async def refresh_fraud_guard(self) -> None:
        """The fraud guard's loop: write this process's counts to its shard, then sum the
        shards of every destination in use here or tripped anywhere, record the trips and
        clears found (each told once, by whichever process records it) and keep the tripped
        set in memory. With the store unavailable, the counts wait and the set stays."""
        guard = self._live.current.abuse.fraud_guard
        await self._flush_fraud_counts(guard.window_seconds)
        if not guard.enabled:
            self._tripped = {}
            return
        try:
            tripped = await self._fraud.tripped()
        except Unavailable:
            return
        now = time.monotonic()
        self._watched = {
            d: seen for d, seen in self._watched.items() if now - seen < guard.window_seconds
        }
        self._tripped = tripped  # the fleet's view; _judge updates it as it goes
        by_country: dict[str, set[str]] = {}
        for group in [*self._watched, *((d,) for d in tripped)]:
            by_country.setdefault(_country(group[0]), set()).update(group)
        for country, destinations in by_country.items():
            try:
                window = guard.window_seconds
                counts = await self._fraud.counts(country, sorted(destinations), window)
            except Unavailable:
                continue  # judged again next time; its trips stand meanwhile
            for count in counts:
                await self._judge(count, guard, tripped)

    async def _flush_fraud_counts(self, window_seconds: int) -> None:
        """Write the counts gathered since the last loop (kept for the next one on failure)."""
        pending, self._pending = self._pending, {}
        for destinations, (sent, verified) in pending.items():
            try:
                await self._fraud.add(
                    destinations[0],
                    list(destinations),
                    window_seconds,
                    sent=sent,
                    verified=verified,
                )
            except Unavailable:
                counts = self._pending.setdefault(destinations, [0, 0])
                counts[0] += sent
                counts[1] += verified

    async def _judge(
        self, count: FraudCounts, guard: FraudGuardSettings, tripped: dict[str, FraudTrip]
    ) -> None:
        """Trip or clear ``count``'s destination by its figures, in the store and ``tripped``;
        a change this process recorded first is logged and told."""
        trips = count.sent >= guard.min_sent and count.verified < guard.floor * count.sent
        destination = count.destination
        if trips:
            trip = FraudTrip(
                destination=destination,
                sent=count.sent,
                verified=count.verified,
                until_s=count.oldest_leaves_at_s,
            )
            tripped[destination] = trip  # in memory first: refused before anyone can read it
            changed = await self._fraud.trip(trip)
        elif destination in tripped:
            del tripped[destination]
            changed = await self._fraud.untrip(destination)
        else:
            return
        if not changed:
            return
        if trips:
            FRAUD_TRIPS.labels(destination=destination).inc()
        log.warning(
            "fraud guard %s for %s: %d verified of %d sent (%s)",
            "tripped" if trips else "cleared",
            destination,
            count.verified,
            count.sent,
            guard.mode,
        )
        try:
            await self._events.fraud_changed(
                destination,
                tripped=trips,
                sent=count.sent,
                verified=count.verified,
                source="window",
            )
        except Unavailable:
            log.error("fraud guard: the event for %s could not be queued", destination)

    def _check_fraud(self, destinations: list[str], guard: FraudGuardSettings) -> None:
        """Refuse a destination the fleet has tripped (memory only), and have the loop watch
        these destinations."""
        self._watched[tuple(destinations)] = time.monotonic()
        for destination in destinations:
            trip = self._tripped.get(destination)
            if trip is None:
                continue
            rule = f"fraud_guard:{destination}"
            if guard.mode == "enforce":
                raise SuspectedFraud(rule, max(1, trip.until_s - int(time.time())))
            log.info("monitor: rule %s would refuse a challenge", rule)

    async def _count(
        self,
        rules: list[RateRule],
        number: PhoneNumber,
        client: str,
        client_ip: str | None,
        request_id: str,
    ) -> list[str]:
        """Count the request against every rule at once (one slot each); on a refusal, give
        back what the others counted."""
        address = client_address(client_ip) if client_ip is not None else None
        applying = [
            (rule, subject)
            for rule in rules
            if (subject := rule_subject(rule, number, client=client, address=address))
        ]
        outcomes = await asyncio.gather(
            *(self._quotas.take(rule, subject, request_id) for rule, subject in applying),
            return_exceptions=True,
        )
        failure = next((o for o in outcomes if isinstance(o, BaseException)), None)
        # After a failure (a timeout may have counted anyway) every key is given back:
        # removing a request id that is not there is harmless.
        counted = (
            [key for rule, subject in applying for key in self._quotas.keys(rule, subject)]
            if failure is not None
            else [o.key for o in outcomes if not isinstance(o, BaseException) and o.counted]
        )
        refusal: RateLimited | None = None
        for (rule, _), outcome in zip(applying, outcomes, strict=True):
            if isinstance(outcome, BaseException) or not outcome.full:
                continue
            seconds = ceil_seconds(outcome.retry_after_ms)
            if rule.mode == "monitor":
                log.info(
                    "monitor: rule %s would refuse a challenge (retry in %d s)", rule.name, seconds
                )
            elif refusal is None or seconds > (refusal.retry_after_seconds or 0):
                refusal = RateLimited(rule.name, seconds)
        if failure is not None or refusal is not None:
            await self.give_back(Admission(request_id, NOWHERE, counted))
            if failure is not None:
                raise failure
            assert refusal is not None
            raise refusal
        return counted
