"""What a handler reads from its request: the service, and the caller ``authorize`` found.

Read from the request rather than injected as Litestar dependencies: resolving dependencies
cost more per request than everything the handlers themselves do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from litestar import Request

    from otpservice.otp import OtpService
    from otpservice.store.audit import AuditLog
    from otpservice.web.guards import ApiClient


def otp_service(request: Request[Any, Any, Any]) -> OtpService:
    """The service ``create_app`` put on the app's state."""
    service: OtpService = request.app.state.otp
    return service


def caller(request: Request[Any, Any, Any]) -> str:
    """The name of the client ``authorize`` authenticated."""
    client: ApiClient = request.state.api_client
    return client.name


async def audit(request: Request[Any, Any, Any], kind: str, **data: Any) -> None:
    """Record an operator's change in the audit stream, with the client that made it."""
    log: AuditLog = request.app.state.runtime.audit
    await log.record(kind, actor=caller(request), data=data)
