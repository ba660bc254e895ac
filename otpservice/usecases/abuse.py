"""Abuse defences beyond one number: the rules the security team tunes (``abuse.*``).

Before a challenge is issued, in this order:

1. The safe list: numbers and prefixes exempt from everything below (the per-number limits,
   the lockout and the attempt budget still apply).
2. Geo permissions: allowed and denied countries and prefixes, and number types
   (premium rate, shared cost, unknown by default). Refused: ``403 destination_not_allowed``.
3. The fraud guard: when few codes sent to the number's prefix were verified over the window
   (below its baseline's, ``low_conversion``), new ones there are refused (``429
   suspected_fraud``) until the ratio recovers or an operator clears it: for everyone when the
   unverified codes came from many sources (``trip_scope``), else only for the sources that
   sent them, so one attacker cannot switch a prefix off for everyone. A whole calling code is
   refused only as ``country_trip`` says. A request reads only memory: counts are batched per
   process and added to the process's shard, and a loop (``refresh_fraud_guard``, every
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
from otpservice.metrics import FRAUD_ALERTS, FRAUD_TRIPS
from otpservice.models import NOWHERE, Destination, FraudScope, ceil_seconds
from otpservice.phone import calling_code_of
from otpservice.store.fraud import FraudTrip, SourceCounts

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
# A calling code trips with ``country_trip = "prefixes"`` once this many of its prefixes have
# tripped for everyone.
COUNTRY_TRIP_PREFIXES = 3
# The end-user networks the fraud guard tells apart: one /24 (IPv4) or /64 (IPv6) is one source,
# so an attacker's neighbouring addresses count as one.
SOURCE_IPV4_BITS, SOURCE_IPV6_BITS = 24, 64
DAY_SECONDS = 86400


@dataclass(frozen=True, slots=True)
class FraudState:
    """A destination's conversion over the fraud guard's window, and whether it is tripped."""

    destination: str
    tripped: bool
    sent: int
    verified: int
    scope: FraudScope | None = None  # whom it refuses, when tripped
    refused_sources: int = 0  # for the scope "sources"
    baseline_sent: int = 0
    baseline_verified: int = 0


@dataclass(slots=True)
class _Pending:
    """Fraud guard counts of one destination group not written yet, in all and by source."""

    sent: int = 0
    verified: int = 0
    by_source: dict[str, list[int]] = field(default_factory=dict)  # source -> [sent, verified]

    def add(self, source: str, *, sent: int, verified: int) -> None:
        """Count codes of ``source`` ("" for none known: the totals only)."""
        self.sent += sent
        self.verified += verified
        if source:
            self._add_source(source, sent, verified)

    def merge(self, other: _Pending) -> None:
        """Add counts that could not be written, to go with the next write."""
        self.sent += other.sent
        self.verified += other.verified
        for source, (sent, verified) in other.by_source.items():
            self._add_source(source, sent, verified)

    def _add_source(self, source: str, sent: int, verified: int) -> None:
        counts = self.by_source.setdefault(source, [0, 0])
        counts[0] += sent
        counts[1] += verified


@dataclass(frozen=True, slots=True)
class Admission:
    """A request the rules let through: what it counted, to give back if it goes no further."""

    request_id: str
    where: Destination  # stored with its challenge
    counted: list[str] = field(default_factory=list)  # quota keys
    destinations: list[str] = field(default_factory=list)  # watched by the fraud guard


def where_of(number: PhoneNumber, prefix_digits: int, source: str = "") -> Destination:
    """The number's region, calling code and prefix, and the fraud guard's source of the
    request, as a challenge keeps them."""
    return Destination(
        region=number.region,
        calling_code=f"+{number.country_code}",
        prefix=number.prefix(prefix_digits),
        source=source,
    )


def source_network(client_ip: str | None) -> str:
    """The end user's network as the fraud guard counts it: the /24 or /64 of the address the
    app sent, or "" when it sent none (then the API client is the whole source)."""
    if client_ip is None:
        return ""
    address = client_address(client_ip)
    bits = SOURCE_IPV4_BITS if address.version == 4 else SOURCE_IPV6_BITS
    return str(ipaddress.ip_network(f"{address}/{bits}", strict=False))


def _has_baseline(count: FraudCounts, guard: FraudGuardSettings) -> bool:
    """Whether the last seven days hold enough codes (``min_sent``) to judge against."""
    return bool(count.baseline_days) and count.baseline_sent >= guard.min_sent


def trip_floor(count: FraudCounts, guard: FraudGuardSettings) -> float:
    """The conversion under which ``count``'s destination looks pumped: ``floor``, or half its
    baseline's when that is lower (a baseline needs ``min_sent`` codes over seven days)."""
    if _has_baseline(count, guard):
        return min(guard.floor, 0.5 * count.baseline_verified / count.baseline_sent)
    return guard.floor


def low_conversion(count: FraudCounts, guard: FraudGuardSettings) -> bool:
    """Whether a destination's window looks like SMS pumping: its conversion under
    ``trip_floor`` with at least max(``min_sent``, three times its mean sends per window).
    Without a baseline (fewer than ``min_sent`` codes over the last seven days), ``floor`` and
    ``min_sent`` alone."""
    min_sent = float(guard.min_sent)
    if _has_baseline(count, guard):
        per_window = (
            count.baseline_sent * guard.window_seconds / (count.baseline_days * DAY_SECONDS)
        )
        min_sent = max(min_sent, 3 * per_window)
    floor = trip_floor(count, guard)
    return count.sent >= min_sent and count.verified < floor * count.sent


def trip_scope(
    sources: dict[str, SourceCounts], min_sources: int, floor: float
) -> tuple[FraudScope, list[str]]:
    """Whom a tripped prefix refuses, from its sources' codes: everyone when its unverified
    codes came from at least ``min_sources`` sources with none above half of them (or, from
    counts of the release before, from no known source); else only the sources that made it
    trip: the one above half, and those under ``floor`` themselves that sent at least a
    ``min_sources``-th of the unverified codes (a user whose one code is still on its way is
    none of them)."""
    unverified = {s: c.sent - c.verified for s, c in sources.items() if c.sent > c.verified}
    total = sum(unverified.values())
    if not total:
        return "everyone", []
    above_half = {source for source, n in unverified.items() if 2 * n > total}
    if len(unverified) >= min_sources and not above_half:
        return "everyone", []
    large = {source for source, n in unverified.items() if n * min_sources >= total}
    pumping = {s for s in large if sources[s].verified < floor * sources[s].sent}
    refused = above_half | pumping or large
    return ("sources", sorted(refused)) if refused else ("everyone", [])


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
        # Fraud guard counts not written yet, by destinations.
        self._pending: dict[tuple[str, ...], _Pending] = {}
        # The destinations of each country this process sent to, and when last (monotonic):
        # the loop sums their counts until a window has passed without one.
        self._watched: dict[tuple[str, ...], float] = {}
        # The fleet's tripped destinations, as the loop last read them.
        self._tripped: dict[str, FraudTrip] = {}
        # Calling codes this process has alerted on (``country_trip = "operator"``).
        self._alerted: set[str] = set()

    async def admit(
        self,
        number: PhoneNumber,
        *,
        client: str,
        client_ip: str | None,
        fraud_guard: bool = True,
    ) -> Admission:
        """Check and count a new challenge for ``number`` (``fraud_guard`` False: a test number,
        which the fraud guard neither counts nor refuses).

        Raises:
            DestinationNotAllowed, SuspectedFraud, RateLimited: nothing was counted.
        """
        abuse = self._live.current.abuse
        guard = abuse.fraud_guard
        request_id = secrets.token_urlsafe(9)
        if fraud_guard and is_safe(abuse.safe_list, number):
            # Kept out of the fraud guard's counts, sent and verified alike.
            return Admission(request_id, Destination(region=number.region))
        refusal = geo_refusal(abuse.geo, number)
        if refusal is not None:
            rule, detail = refusal
            if abuse.geo.mode == "enforce":
                raise DestinationNotAllowed(rule, detail)
            log.info("monitor: rule %s would refuse a challenge (%s)", rule, number.region)
        if not fraud_guard:
            counted = await self._count(abuse.rules, number, client, client_ip, request_id)
            return Admission(request_id, Destination(region=number.region), counted)
        source = self._fraud.source(client, source_network(client_ip)) if guard.enabled else ""
        where = where_of(number, guard.prefix_digits, source)
        destinations = where.watched() if guard.enabled else []
        if destinations:
            self._check_fraud(destinations, source, guard)
        counted = await self._count(abuse.rules, number, client, client_ip, request_id)
        return Admission(request_id, where, counted, destinations)

    async def admit_client(self, client: str) -> Admission:
        """Count a request that sends no SMS (an authenticator-app enrolment) against the
        ``client`` rate rules only.

        Raises:
            RateLimited: nothing was counted.
        """
        rules = self._live.current.abuse.rules
        request_id = secrets.token_urlsafe(9)
        applying = [(rule, client) for rule in rules if rule.scope == "client"]
        return Admission(request_id, NOWHERE, await self._take(applying, request_id))

    async def give_back(self, admission: Admission) -> None:
        """The challenge was not issued after all: uncount it (best effort)."""
        with contextlib.suppress(Unavailable):
            await asyncio.gather(
                *(self._quotas.give_back(key, admission.request_id) for key in admission.counted)
            )

    def issued(self, admission: Admission) -> None:
        """Count a code sent, for the fraud guard (written within ``FLUSH_SECONDS``)."""
        self._count_fraud(admission.destinations, admission.where.source, "sent")

    def issued_after_doubt(
        self, number: PhoneNumber, *, client: str, client_ip: str | None
    ) -> None:
        """Count a code sent by the retry that finished a request answered 503 in doubt (the
        first try stopped before ``issued``), as ``issued`` would have."""
        abuse = self._live.current.abuse
        guard = abuse.fraud_guard
        if guard.enabled and not is_safe(abuse.safe_list, number):
            source = self._fraud.source(client, source_network(client_ip))
            self._count_fraud(where_of(number, guard.prefix_digits).watched(), source, "sent")

    def verified(self, where: Destination) -> None:
        """Count a code verified for the number ``where`` (as stored with its challenge)."""
        if self._live.current.abuse.fraud_guard.enabled:
            self._count_fraud(where.watched(), where.source, "verified")

    async def fraud_state(self, destination: str) -> FraudState:
        """The fraud guard's figures and state for a destination ("+44" or "+4470"), read
        from the store now.

        Raises:
            InvalidInput: ``invalid_destination``: no calling code starts it.
        """
        guard = self._live.current.abuse.fraud_guard
        [counts] = await self._fraud.counts(
            _country(destination), [destination], guard.window_seconds, now_s=int(time.time())
        )
        trip = (await self._fraud.tripped()).get(destination)
        return FraudState(
            destination,
            tripped=trip is not None,
            sent=counts.sent,
            verified=counts.verified,
            scope=trip.scope if trip else None,
            refused_sources=len(trip.sources) if trip else 0,
            baseline_sent=counts.baseline_sent,
            baseline_verified=counts.baseline_verified,
        )

    async def clear_fraud(self, destination: str) -> bool:
        """An operator clears a destination: its counts start again. Whether it was tripped.

        Raises:
            InvalidInput: ``invalid_destination``.
        """
        guard = self._live.current.abuse.fraud_guard
        await self._fraud.clear_counts(
            _country(destination), destination, guard.window_seconds, now_s=int(time.time())
        )
        was_tripped = await self._fraud.untrip(destination)
        self._tripped.pop(destination, None)
        if was_tripped:
            log.warning("fraud guard cleared for %s by an operator", destination)
            await self._events.fraud_changed(
                destination, tripped=False, sent=0, verified=0, source="admin"
            )
        return was_tripped

    def _count_fraud(self, destinations: list[str], source: str, what: str) -> None:
        """Add to the counts that the loop writes: a request does not wait for a Redis round
        trip for them (they only move a ratio over an hour)."""
        if destinations:
            pending = self._pending.setdefault(tuple(destinations), _Pending())
            pending.add(source, sent=int(what == "sent"), verified=int(what == "verified"))

    async def refresh_fraud_guard(self) -> None:
        """The fraud guard's loop: write this process's counts to its shard, then sum the
        shards of every destination in use here or tripped anywhere, record the trips and
        clears found (each told once, by whichever process records it) and keep the tripped
        set in memory. With the store unavailable, the counts wait and the set stays."""
        guard = self._live.current.abuse.fraud_guard
        now_s = int(time.time())
        await self._flush_fraud_counts(guard.window_seconds, now_s)
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
                counts = await self._fraud.counts(
                    country, sorted(destinations | {country}), window, now_s=now_s
                )
            except Unavailable:
                continue  # judged again next time; its trips stand meanwhile
            for count in counts:
                if count.destination != country:
                    await self._judge_prefix(count, country, guard, tripped, now_s)
            for count in counts:
                if count.destination == country:
                    await self._judge_country(count, guard, tripped)

    async def _flush_fraud_counts(self, window_seconds: int, now_s: int) -> None:
        """Write the counts gathered since the last loop (kept for the next one on failure)."""
        pending, self._pending = self._pending, {}
        for destinations, counts in pending.items():
            try:
                await self._fraud.add(
                    destinations[0],
                    list(destinations),
                    window_seconds,
                    sent=counts.sent,
                    verified=counts.verified,
                    sources=[
                        SourceCounts(source=source, sent=sent, verified=verified)
                        for source, (sent, verified) in counts.by_source.items()
                    ],
                    now_s=now_s,
                )
            except Unavailable:
                self._pending.setdefault(destinations, _Pending()).merge(counts)

    async def _judge_prefix(
        self,
        count: FraudCounts,
        country: str,
        guard: FraudGuardSettings,
        tripped: dict[str, FraudTrip],
        now_s: int,
    ) -> None:
        """Trip (for everyone or for its sources) or clear a prefix by its figures."""
        if not low_conversion(count, guard):
            await self._clear(count, guard, tripped)
            return
        try:
            by_source = await self._fraud.by_source(
                country, count.destination, guard.window_seconds, now_s=now_s
            )
        except Unavailable:
            return  # judged again next time; a trip already recorded stands
        scope, sources = trip_scope(by_source, guard.min_sources, trip_floor(count, guard))
        await self._trip(count, guard, tripped, scope, sources)

    async def _judge_country(
        self, count: FraudCounts, guard: FraudGuardSettings, tripped: dict[str, FraudTrip]
    ) -> None:
        """A calling code trips only as ``country_trip`` says: for everyone once enough of its
        prefixes have (``"prefixes"``), or never, an alert for an operator (``"operator"``)."""
        country = count.destination
        if guard.country_trip == "prefixes":
            tripped_prefixes = [
                d
                for d, trip in tripped.items()
                if d != country and _country(d) == country and trip.scope == "everyone"
            ]
            if len(tripped_prefixes) >= COUNTRY_TRIP_PREFIXES:
                await self._trip(count, guard, tripped, "everyone", [])
                return
        elif low_conversion(count, guard):
            if country not in self._alerted:
                self._alerted.add(country)
                FRAUD_ALERTS.labels(destination=country).inc()
                log.warning(
                    "fraud guard alert for %s: %d verified of %d sent; not tripped "
                    "(country_trip = operator): pause it with abuse.geo if it is pumping",
                    country,
                    count.verified,
                    count.sent,
                )
        else:
            self._alerted.discard(country)
        await self._clear(count, guard, tripped)

    async def _trip(
        self,
        count: FraudCounts,
        guard: FraudGuardSettings,
        tripped: dict[str, FraudTrip],
        scope: FraudScope,
        sources: list[str],
    ) -> None:
        """Record ``count``'s destination as tripped for ``scope``; a change this process
        recorded first is logged and told."""
        trip = FraudTrip(
            destination=count.destination,
            sent=count.sent,
            verified=count.verified,
            until_s=count.oldest_leaves_at_s,
            scope=scope,
            sources=sources,
        )
        tripped[count.destination] = trip  # in memory first: refused before anyone can read it
        if await self._fraud.trip(trip):
            FRAUD_TRIPS.labels(destination=count.destination).inc()
            await self._tell(count, guard, tripped=True, scope=scope, sources=len(sources))

    async def _clear(
        self, count: FraudCounts, guard: FraudGuardSettings, tripped: dict[str, FraudTrip]
    ) -> None:
        """Record ``count``'s destination as no longer tripped, if it was."""
        if count.destination not in tripped:
            return
        del tripped[count.destination]
        if await self._fraud.untrip(count.destination):
            await self._tell(count, guard, tripped=False, scope=None, sources=0)

    async def _tell(
        self,
        count: FraudCounts,
        guard: FraudGuardSettings,
        *,
        tripped: bool,
        scope: FraudScope | None,
        sources: int,
    ) -> None:
        whom = {None: "", "everyone": " for everyone", "sources": f" for {sources} source(s)"}
        log.warning(
            "fraud guard %s for %s%s: %d verified of %d sent (%s)",
            "tripped" if tripped else "cleared",
            count.destination,
            whom[scope],
            count.verified,
            count.sent,
            guard.mode,
        )
        try:
            await self._events.fraud_changed(
                count.destination,
                tripped=tripped,
                sent=count.sent,
                verified=count.verified,
                source="window",
                scope=scope,
            )
        except Unavailable:
            log.error("fraud guard: the event for %s could not be queued", count.destination)

    def _check_fraud(self, destinations: list[str], source: str, guard: FraudGuardSettings) -> None:
        """Refuse a destination the fleet has tripped for everyone or for this source (memory
        only), and have the loop watch these destinations."""
        self._watched[tuple(destinations)] = time.monotonic()
        for destination in destinations:
            trip = self._tripped.get(destination)
            if trip is None or (trip.scope == "sources" and source not in trip.sources):
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
        return await self._take(applying, request_id)

    async def _take(self, applying: list[tuple[RateRule, str]], request_id: str) -> list[str]:
        """Count the request against each (rule, subject) at once; on a refusal, give back
        what the others counted."""
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
