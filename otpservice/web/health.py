"""GET /healthz (the process answers), GET /readyz (the store runs a script), GET /metrics."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get

from otpservice.metrics import exposition
from otpservice.web.context import otp_service
from otpservice.web.openapi import documented
from otpservice.web.schemas import Health


@get("/healthz", summary="Liveness", **documented("public"))
async def healthz() -> Health:
    """The process is alive; says nothing about Redis, so a Redis outage never restarts us."""
    return Health()


@get("/readyz", summary="Readiness", **documented("public", "store_unavailable"))
async def readyz(request: Request[Any, Any, Any]) -> Health:
    """The store answers a writing script; 503 ``store_unavailable`` otherwise."""
    await otp_service(request).check_ready()
    return Health()


@get("/metrics", summary="Prometheus metrics", media_type="text/plain", **documented("public"))
async def metrics() -> Response[bytes]:
    """Counters and histograms in the Prometheus text format (no personal data in them)."""
    body, content_type = exposition()
    return Response(body, media_type=content_type)


HEALTH_ROUTES = [healthz, readyz, metrics]
