"""Operator route for analytics (the ``admin`` scope)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Any

from litestar import Request, get
from litestar.params import QueryParameter

from otpservice.errors import InvalidInput
from otpservice.usecases.analytics import AnalyticsReport, GroupBy
from otpservice.web.context import services
from otpservice.web.problems import problem_responses

DAY_MS = 86_400_000


@get("/analytics", summary="Usage and conversion", responses=problem_responses(400, 401, 403, 503))
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
