"""The HTTP layer: thin handlers, wire schemas, authentication and problem mapping."""

from __future__ import annotations

from litestar.datastructures import State
from litestar.di import Provide

from otpservice.otp import OtpService
from otpservice.web.challenges import CHALLENGE_ROUTES
from otpservice.web.health import HEALTH_ROUTES

ROUTES = [*CHALLENGE_ROUTES, *HEALTH_ROUTES]


def provide_otp(state: State) -> OtpService:
    """The service create_app put on the app's state."""
    service: OtpService = state.otp
    return service


DEPENDENCIES = {"otp": Provide(provide_otp, sync_to_thread=False)}

__all__ = ["DEPENDENCIES", "ROUTES"]
