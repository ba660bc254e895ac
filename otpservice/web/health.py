"""GET /healthz (the process answers) and GET /readyz (the store runs a script)."""

from __future__ import annotations

from typing import Any

from litestar import Request, get

from otpservice.web.context import otp_service
from otpservice.web.problems import problem_responses
from otpservice.web.schemas import Health


@get("/healthz", summary="Liveness", opt={"public": True})
async def healthz() -> Health:
    """The process is alive; says nothing about Redis, so a Redis outage never restarts us."""
    return Health()


@get("/readyz", summary="Readiness", opt={"public": True}, responses=problem_responses(503))
async def readyz(request: Request[Any, Any, Any]) -> Health:
    """The store answers a writing script; 503 ``store_unavailable`` otherwise."""
    await otp_service(request).check_ready()
    return Health()


HEALTH_ROUTES = [healthz, readyz]
