"""The HTTP app: ``create_app`` puts the API in front of a ``Runtime`` (the composition root
in ``runtime.py``)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from litestar import Litestar
from litestar.datastructures import State

from otpservice.logs import configure_logging
from otpservice.runtime import Runtime
from otpservice.store import connect
from otpservice.validation import load_settings
from otpservice.web import ROUTES
from otpservice.web.guards import Authenticator, authorize
from otpservice.web.observe import observe_requests
from otpservice.web.openapi import openapi_config
from otpservice.web.problems import EXCEPTION_HANDLERS
from otpservice.web.webhooks import WebhookAuth

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from otpservice.config.schema import ValidSettings
    from otpservice.crypto.codes import CodeHasher
    from otpservice.sms import SmsProvider
    from otpservice.store import StoreClient

MAX_BODY_BYTES = 16 * 1024


def create_app_from_environment() -> Litestar:
    """The app of one worker process of ``otpservice serve --workers N``.

    Each worker reads the same config (``OTP_CONFIG`` and ``OTP_*``) the parent validated.
    """
    settings = load_settings()
    configure_logging(settings.log_level, settings.effective_log_format)
    return create_app(settings)


def create_app(
    settings: ValidSettings,
    *,
    redis: StoreClient | None = None,
    sms: SmsProvider | None = None,
    hasher: CodeHasher | None = None,
) -> Litestar:
    """Build the service. A ``redis`` client or ``sms`` sender passed in stays the caller's."""
    owns_redis = redis is None
    client = connect(settings) if redis is None else redis
    runtime = Runtime(settings, client, sms=sms, hasher=hasher)

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        await runtime.start()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            # Only in the main thread of a process (not under a test client's thread).
            asyncio.get_running_loop().add_signal_handler(
                signal.SIGHUP, runtime.services.live.reload
            )
        try:
            yield
        finally:
            await runtime.stop()
            if owns_redis:
                await client.aclose()

    return Litestar(
        route_handlers=ROUTES,
        before_request=authorize,
        middleware=[observe_requests],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        state=State(
            {
                "authenticator": Authenticator(settings.api_tokens),
                "services": runtime.services,
                "runtime": runtime,
                "webhook_auth": WebhookAuth(settings),
                "pod_port": settings.pod_listener.port if settings.pod_listener else None,
            }
        ),
        lifespan=[lifespan],
        openapi_config=openapi_config(),
        # Logging is set up by logs.py; Litestar's default config would replace the root
        # handlers and with them the filter that masks phone numbers.
        logging_config=None,
        # Requests are small JSON objects; anything bigger is refused with 413 unread.
        request_max_body_size=MAX_BODY_BYTES,
        debug=False,
    )
