"""Every Prometheus metric, defined once, and the ``/metrics`` exposition.

With several server processes (``serve --workers N``) set ``PROMETHEUS_MULTIPROC_DIR`` to an
empty writable directory: each process writes its samples there and ``/metrics`` (in any of
them) adds them up (prometheus-client's multiprocess mode).
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

HTTP_REQUESTS = Counter(
    "otp_http_requests_total", "HTTP requests by route and status", ["route", "method", "status"]
)
HTTP_SECONDS = Histogram(
    "otp_http_request_duration_seconds",
    "HTTP request latency by route",
    ["route"],
    buckets=_LATENCY,
)
CHALLENGES = Counter("otp_challenges_total", "Challenges by outcome (issued, refused)", ["outcome"])
REFUSALS = Counter("otp_throttle_refusals_total", "Challenges refused, by rule", ["rule"])
VERIFICATIONS = Counter(
    "otp_verifications_total", "Verifications by outcome (approved, failed)", ["outcome"]
)
DELIVERIES = Counter(
    "otp_deliveries_total",
    "Delivery outcomes (sent, delivered, failed) by provider",
    ["status", "provider"],
)
OPT_OUTS = Counter("otp_opt_out_changes_total", "Opt-outs and opt-ins", ["change"])
FRAUD_TRIPS = Counter("otp_fraud_guard_trips_total", "Fraud guard trips", ["destination"])
FRAUD_ALERTS = Counter(
    "otp_fraud_guard_alerts_total",
    "Calling codes whose conversion would trip the fraud guard, left to an operator",
    ["destination"],
)
TOTP = Counter(
    "otp_totp_events_total",
    "Authenticator-app factors and codes: enrolled, activated, approved, failed, "
    "recovery_used, recovery_failed",
    ["event"],
)
PROVIDER_SECONDS = Histogram(
    "otp_provider_send_duration_seconds",
    "Time a provider took to answer a send",
    ["provider"],
    buckets=_LATENCY,
)
PROVIDER_ERRORS = Counter(
    "otp_provider_errors_total",
    "Sends a provider did not take, by reason",
    ["provider", "reason"],
)
QUEUE_DEPTH = Gauge(
    "otp_queue_depth",
    "Entries in a durable queue (outbox, events, replies), retries included",
    ["queue"],
    multiprocess_mode="max",
)
QUEUE_AGE = Gauge(
    "otp_queue_oldest_age_seconds",
    "Age of the oldest entry in a durable queue",
    ["queue"],
    multiprocess_mode="max",
)

# What each analytics metric (see analytics.py) adds to, and with which labels.
_EVENT_METRICS: dict[str, tuple[Counter, dict[str, str]]] = {
    "issued": (CHALLENGES, {"outcome": "issued"}),
    "verified": (VERIFICATIONS, {"outcome": "approved"}),
    "attempts_failed": (VERIFICATIONS, {"outcome": "failed"}),
    "opt_outs": (OPT_OUTS, {"change": "opt_out"}),
    "opt_ins": (OPT_OUTS, {"change": "opt_in"}),
    "totp_enrolled": (TOTP, {"event": "enrolled"}),
    "totp_activated": (TOTP, {"event": "activated"}),
    "totp_verified": (TOTP, {"event": "approved"}),
    "totp_failed": (TOTP, {"event": "failed"}),
    "recovery_used": (TOTP, {"event": "recovery_used"}),
    "recovery_failed": (TOTP, {"event": "recovery_failed"}),
}


def count_event(metric: str, provider: str) -> None:
    """Add one analytics event (``issued``, ``refused:<rule>``, ``sent``, ...) to its metric."""
    if metric.startswith("refused:"):
        CHALLENGES.labels(outcome="refused").inc()
        REFUSALS.labels(rule=metric.removeprefix("refused:")).inc()
    elif metric in ("sent", "delivered", "failed"):
        DELIVERIES.labels(status=metric, provider=provider or "none").inc()
    elif metric in _EVENT_METRICS:
        counter, labels = _EVENT_METRICS[metric]
        counter.labels(**labels).inc()


def exposition() -> tuple[bytes, str]:
    """The metrics in the Prometheus text format, and its content type."""
    if os.environ.get(MULTIPROCESS_DIR):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def observe_http(route: str, method: str, status: int, seconds: float) -> None:
    """Count one answered HTTP request and its latency."""
    # labels() costs a lock and a lookup by keyword; the children are kept here instead.
    children = _HTTP_CHILDREN.get((route, method, status))
    if children is None:
        children = (
            HTTP_REQUESTS.labels(route=route, method=method, status=str(status)),
            HTTP_SECONDS.labels(route=route),
        )
        _HTTP_CHILDREN[(route, method, status)] = children
    children[0].inc()
    children[1].observe(seconds)


_HTTP_CHILDREN: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
