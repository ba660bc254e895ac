"""Analytics: usage and conversion counters per hour, country and provider.

Counted in memory as things happen and added to Redis (one hash per hour) every second, so no
request waits for them; kept for ``analytics.keep_days``. ``report`` sums them over a period,
optionally grouped by country, provider or hour, with the conversion rate (verified / sent),
the delivery rate (delivered / sent) and time-to-verify percentiles. Countries are ISO codes;
nothing here identifies a person.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from datetime import datetime  # noqa: TC003 (msgspec reads the annotations at run time)
from typing import TYPE_CHECKING, Literal

import msgspec

from otpservice.errors import Unavailable
from otpservice.metrics import count_event
from otpservice.models import DeliveryStatus, datetime_from_ms

if TYPE_CHECKING:
    from otpservice.config.live import LiveSettings
    from otpservice.models import DeliveryUpdate
    from otpservice.store.stats import StatsStore

log = logging.getLogger("otpservice.analytics")  # a log field: kept as named before the move

FLUSH_SECONDS = 1.0
# Upper bounds (seconds) of the time-to-verify histogram; one more bucket holds the rest.
TTV_BOUNDS = (5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600)
METRICS = (
    "issued",
    "sent",
    "delivered",
    "failed",
    "verified",
    "cancelled",
    "attempts_failed",
    "opt_outs",
    "opt_ins",
    "totp_enrolled",
    "totp_activated",
    "totp_verified",
    "totp_failed",
    "recovery_used",
    "recovery_failed",
)
GroupBy = Literal["country", "provider", "hour"]
_DELIVERY_METRICS = {
    DeliveryStatus.DELIVERED: "delivered",
    DeliveryStatus.UNDELIVERED: "failed",
    DeliveryStatus.FAILED: "failed",
}
# States that mean the provider took the message: "sent" is counted at the first of them.
_REACHED = {DeliveryStatus.SENT, DeliveryStatus.DELIVERED, DeliveryStatus.UNDELIVERED}


class Percentiles(msgspec.Struct, frozen=True):
    """Time from issuing to verifying, in seconds (interpolated within histogram buckets)."""

    p50: float
    p90: float
    p99: float


class Figures(msgspec.Struct, frozen=True, kw_only=True):
    """The counters of a period (or of one group in it) and the rates derived from them."""

    issued: int = 0
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    verified: int = 0
    cancelled: int = 0
    expired: int = 0
    attempts_failed: int = 0
    opt_outs: int = 0
    opt_ins: int = 0
    # Authenticator apps: factors enrolled and activated, codes approved and refused (wrong,
    # replayed), recovery codes used and refused.
    totp_enrolled: int = 0
    totp_activated: int = 0
    totp_verified: int = 0
    totp_failed: int = 0
    recovery_used: int = 0
    recovery_failed: int = 0
    refused: dict[str, int] = msgspec.field(default_factory=dict)
    conversion_rate: float | None = None
    delivery_rate: float | None = None
    time_to_verify_seconds: Percentiles | None = None


class Group(Figures, frozen=True, kw_only=True):
    """The figures of one country, provider or hour."""

    key: str


class AnalyticsReport(msgspec.Struct, frozen=True, kw_only=True):
    """Figures over ``start`` to ``end``: in total, and per group when asked."""

    start: datetime
    end: datetime
    group_by: GroupBy | None
    total: Figures
    groups: list[Group]


class Analytics:
    """Counts events and reports on them."""

    def __init__(self, live: LiveSettings, store: StatsStore) -> None:
        self._live = live
        self._store = store
        self._pending: dict[int, Counter[str]] = {}

    def count(self, metric: str, *, country: str = "", provider: str = "") -> None:
        """Count one ``metric`` (see ``METRICS``, or ``refused:<rule>``) now, here and in the
        Prometheus metrics."""
        self._add(f"{metric}|{country}|{provider}")
        count_event(metric, provider)

    def delivery(self, status: DeliveryStatus, update: DeliveryUpdate, provider: str) -> None:
        """Count a delivery state the first time it is recorded (``update``: what recording
        it answered): sent, delivered, failed; a report that arrives before "sent" was
        recorded counts the send too."""
        if update.outcome != "ok" or update.previous == status:
            return
        country = update.where.region
        provider = provider or update.provider
        if status in _REACHED and update.previous not in _REACHED:
            self.count("sent", country=country, provider=provider)
        metric = _DELIVERY_METRICS.get(status)
        if metric:
            self.count(metric, country=country, provider=provider)

    def verified(self, *, country: str, seconds: float) -> None:
        """Count a verified code and how long it took from issuing."""
        self.count("verified", country=country)
        bucket = next((i for i, b in enumerate(TTV_BOUNDS) if seconds <= b), len(TTV_BOUNDS))
        self._add(f"ttv:{bucket}|{country}|")

    async def flush(self) -> None:
        """Add what was counted since the last flush to Redis (kept for the next on failure)."""
        pending, self._pending = self._pending, {}
        keep = self._live.current.analytics.keep_days * 86400
        for hour, counts in pending.items():
            try:
                await self._store.add(hour, dict(counts), keep)
            except Unavailable:
                self._pending.setdefault(hour, Counter()).update(counts)
                log.warning("analytics: the store is unavailable; counts kept for later")

    async def report(
        self, start_ms: int, end_ms: int, group_by: GroupBy | None = None
    ) -> AnalyticsReport:
        """The figures of the hours from ``start_ms`` to ``end_ms`` (whole hours)."""
        await self.flush()  # what this process counted so far is included
        hours = await self._store.read(range(start_ms // 3_600_000, end_ms // 3_600_000 + 1))
        ttl_s = self._live.current.code.ttl_seconds
        totals = _Tally()
        groups: dict[str, _Tally] = {}
        for hour, fields in sorted(hours.items()):
            # An hour whose codes have all expired by now: what was issued and neither
            # verified nor cancelled expired.
            settled = (hour + 1) * 3600 + ttl_s <= time.time()
            for field, amount in fields.items():
                metric, country, provider = [*field.split("|"), "", ""][:3]
                totals.add(metric, amount, settled)
                if group_by is not None:
                    key = {
                        "country": country,
                        "provider": provider,
                        "hour": datetime_from_ms(hour * 3_600_000).isoformat(),
                    }[group_by]
                    groups.setdefault(key, _Tally()).add(metric, amount, settled)
        return AnalyticsReport(
            start=datetime_from_ms(start_ms),
            end=datetime_from_ms(end_ms),
            group_by=group_by,
            total=totals.figures(),
            groups=[
                Group(key=key, **msgspec.structs.asdict(tally.figures()))
                for key, tally in sorted(groups.items())
            ],
        )

    def _add(self, field: str) -> None:
        hour = int(time.time()) // 3600
        self._pending.setdefault(hour, Counter())[field] += 1


class _Tally:
    """Sums counters into figures."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self.ttv = [0] * (len(TTV_BOUNDS) + 1)
        self.unresolved = 0  # issued - verified - cancelled, in hours whose codes expired

    def add(self, metric: str, amount: int, settled: bool) -> None:
        if metric.startswith("refused:"):
            self.refused[metric.removeprefix("refused:")] += amount
        elif metric.startswith("ttv:"):
            self.ttv[int(metric.removeprefix("ttv:"))] += amount
        else:
            self.counts[metric] += amount
            if settled and metric in ("issued", "verified", "cancelled"):
                self.unresolved += amount if metric == "issued" else -amount

    def figures(self) -> Figures:
        c = self.counts
        sent = c["sent"]
        return Figures(
            **{m: c[m] for m in METRICS},
            expired=max(0, self.unresolved),
            refused=dict(sorted(self.refused.items())),
            conversion_rate=round(c["verified"] / sent, 4) if sent else None,
            delivery_rate=round(c["delivered"] / sent, 4) if sent else None,
            time_to_verify_seconds=_percentiles(self.ttv),
        )


def _percentiles(histogram: list[int]) -> Percentiles | None:
    total = sum(histogram)
    if not total:
        return None

    def at(q: float) -> float:
        rank, seen = q * total, 0
        for i, n in enumerate(histogram):
            if n and seen + n >= rank:
                low = TTV_BOUNDS[i - 1] if i else 0
                high = TTV_BOUNDS[i] if i < len(TTV_BOUNDS) else TTV_BOUNDS[-1] * 2
                return round(low + (high - low) * (rank - seen) / n, 1)
            seen += n
        return float(TTV_BOUNDS[-1])

    return Percentiles(p50=at(0.5), p90=at(0.9), p99=at(0.99))
