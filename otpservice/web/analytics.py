"""Operator route for analytics (the ``admin`` scope)."""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Annotated, Any

from litestar import Request, get
from litestar.params import QueryParameter

from otpservice.errors import InvalidInput
from otpservice.usecases.analytics import AnalyticsReport, GroupBy
from otpservice.web.context import services
from otpservice.web.openapi import documented

DAY_MS = 86_400_000
_RFC3339_START = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")


@get(
    "/analytics",
    summary="Usage and conversion",
    **documented("admin", "invalid_request", "invalid_period", "store_unavailable"),
)
async def read_analytics(
    request: Request[Any, Any, Any],
    start: Annotated[
        datetime | None, QueryParameter(name="from", description="RFC 3339; default: 24 h ago")
    ] = None,
    end: Annotated[
        datetime | None, QueryParameter(name="to", description="RFC 3339; default: now")
    ] = None,
    group_by: Annotated[
        GroupBy | None, QueryParameter(description="country, provider or hour; default: none")
    ] = None,
) -> AnalyticsReport:
    """Challenges issued, refused by rule, sent, delivered, failed, verified, expired, attempts
    failed, opt-outs and opt-ins over a period (whole hours), with the conversion and delivery
    rates and time-to-verify percentiles; in total and per country, provider or hour."""
    for name in ("from", "to"):
        raw = request.query_params.get(name)
        # The decoder also takes a bare number as Unix seconds: the API promises RFC 3339 only.
        if raw is not None and not _RFC3339_START.match(raw):
            raise InvalidInput(
                f"{name} is an RFC 3339 time, such as 2026-12-01T00:00:00Z", code="invalid_period"
            )
    end_ms = _ms(end) if end else int(time.time() * 1000)
    start_ms = _ms(start) if start else end_ms - DAY_MS
    if start_ms > end_ms:
        raise InvalidInput("from must not be after to", code="invalid_period")
    if end_ms - start_ms > 366 * DAY_MS:
        raise InvalidInput("the period is at most 366 days", code="invalid_period")
    analytics = services(request).analytics
    return await analytics.report(start_ms, end_ms, group_by)


def _ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise InvalidInput("from and to need a time zone (Z or an offset)", code="invalid_period")
    return int(moment.timestamp() * 1000)


ANALYTICS_ROUTES = [read_analytics]
