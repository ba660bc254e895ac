"""What a handler reads from its request: the use cases, and the caller ``authorize`` found.

Read from the request rather than injected as Litestar dependencies: resolving dependencies
cost more per request than everything the handlers themselves do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from litestar import Request

    from otpservice.usecases.otp import OtpService
    from otpservice.usecases.services import Services
    from otpservice.web.guards import ApiClient


def services(request: Request[Any, Any, Any]) -> Services:
    """The use cases ``create_app`` put on the app's state."""
    built: Services = request.app.state.services
    return built


def otp_service(request: Request[Any, Any, Any]) -> OtpService:
    """The OTP use case (the hot path's one accessor)."""
    return services(request).otp


def caller(request: Request[Any, Any, Any]) -> str:
    """The name of the client ``authorize`` authenticated."""
    client: ApiClient = request.state.api_client
    return client.name


async def audit(request: Request[Any, Any, Any], kind: str, **data: Any) -> None:
    """Record an operator's change in the audit stream, with the client that made it."""
    await services(request).audit.record(kind, actor=caller(request), data=data)
