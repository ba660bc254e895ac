"""create_app: the one composition root. Builds every collaborator from the settings."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from litestar import Litestar
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin

from otpservice import __version__
from otpservice.codes import CodeHasher, Pepper
from otpservice.errors import ConfigError
from otpservice.logs import configure_logging
from otpservice.otp import OtpService
from otpservice.settings import load_settings
from otpservice.sms import ProviderChain, build_sender
from otpservice.store import ChallengeStore, IdempotencyStore, KeySpace, StoreCommands, connect
from otpservice.web import ROUTES
from otpservice.web.guards import Authenticator, authorize
from otpservice.web.problems import EXCEPTION_HANDLERS

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from otpservice.settings import Settings
    from otpservice.sms import SmsSender
    from otpservice.store import StoreClient

MAX_BODY_BYTES = 16 * 1024

OPENAPI_CONFIG = OpenAPIConfig(
    title="otpservice",
    version=__version__,
    description="Issue and verify SMS one-time codes. Errors are RFC 9457 problems with a "
    "stable `code`.",
    path="/openapi",
    render_plugins=[JsonRenderPlugin()],
)


def build_service(
    settings: Settings,
    client: StoreClient,
    sms: SmsSender,
    *,
    hasher: CodeHasher | None = None,
) -> OtpService:
    """Wire the use cases to a store client, a sender and a hasher."""
    pepper, index_key = settings.secrets.pepper, settings.secrets.index_key
    if not pepper or not index_key:
        raise ConfigError("secrets.pepper and secrets.index_key are required")
    keys = KeySpace(settings.redis.key_prefix, index_key)
    commands = StoreCommands(client, settings.redis)
    if hasher is None:
        previous = settings.secrets.previous_pepper
        hasher = CodeHasher(
            settings.hashing,
            Pepper(pepper),
            Pepper(previous) if previous else None,
            threads=settings.hashing_threads,
        )
    return OtpService(
        settings,
        keys=keys,
        challenges=ChallengeStore(commands, keys, settings),
        idempotency=IdempotencyStore(commands, keys),
        hasher=hasher,
        sender=sms,
    )


def create_app_from_environment() -> Litestar:
    """The app of one worker process of ``otpservice serve --workers N``.

    Each worker reads the same config (``OTP_CONFIG`` and ``OTP_*``) the parent validated.
    """
    settings = load_settings()
    configure_logging(settings.log_level)
    return create_app(settings)


def create_app(
    settings: Settings,
    *,
    redis: StoreClient | None = None,
    sms: SmsSender | None = None,
    hasher: CodeHasher | None = None,
) -> Litestar:
    """Build the service. A ``redis`` client or ``sms`` sender passed in stays the caller's."""
    owns_redis = redis is None
    client = connect(settings) if redis is None else redis
    providers: ProviderChain | None = None
    if sms is None:
        sms = providers = build_sender(settings)
    service = build_service(settings, client, sms, hasher=hasher)

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            service.close()
            if providers is not None:
                await (
                    providers.aclose()
                )  # only the chain built here; a passed-in sender is not ours
            if owns_redis:
                await client.aclose()

    return Litestar(
        route_handlers=ROUTES,
        before_request=authorize,
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        state=State(
            {
                "authenticator": Authenticator(settings.api_tokens),
                "otp": service,
                "providers": providers,
            }
        ),
        lifespan=[lifespan],
        openapi_config=OPENAPI_CONFIG,
        # Logging is set up by logs.py; Litestar's default config would replace the root
        # handlers and with them the filter that masks phone numbers.
        logging_config=None,
        # Requests are small JSON objects; anything bigger is refused with 413 unread.
        request_max_body_size=MAX_BODY_BYTES,
        debug=False,
    )
