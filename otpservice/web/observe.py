"""The one ASGI middleware around every routed request: its id and its metrics.

One layer rather than one per concern: each layer wraps ``send`` and adds a coroutine to every
request, and ``/verify``'s own work is small enough for that to show (see ``bench/``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from otpservice.logs import REQUEST_ID, REQUEST_ID_HEADER, request_id_from
from otpservice.metrics import observe_http

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Message, Receive, Send


def observe_requests(app: ASGIApp) -> ASGIApp:
    """Give each request an id (its ``X-Request-ID`` if sane) that its log lines carry and its
    response returns, and count it by route template, method and status."""

    async def middleware(scope: Any, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = request_id_from(scope["headers"])
        token = REQUEST_ID.set(request_id)
        status = 500

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", ()),
                    (REQUEST_ID_HEADER, request_id.encode("latin-1")),
                ]
            await send(message)

        try:
            await app(scope, receive, send_observed)
        finally:
            REQUEST_ID.reset(token)
            route = scope.get("path_template", "unrouted")
            observe_http(route, scope["method"], status, time.perf_counter() - started)

    return middleware
