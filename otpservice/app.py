"""The composition root: ``Runtime`` builds every collaborator from the settings; ``create_app``
puts the HTTP API in front of it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import httpx
from litestar import Litestar
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin

from otpservice import __version__
from otpservice.abuse import FLUSH_SECONDS as FRAUD_FLUSH_SECONDS
from otpservice.abuse import AbusePolicy
from otpservice.analytics import FLUSH_SECONDS as ANALYTICS_FLUSH_SECONDS
from otpservice.analytics import Analytics
from otpservice.codes import CodeHasher, Pepper
from otpservice.delivery import DeliveryWorker
from otpservice.errors import ConfigError, Unavailable
from otpservice.events import AppEvent, AppEvents, EventRelay
from otpservice.inbound import InboundMessages
from otpservice.live_settings import WATCH_SECONDS, LiveSettings
from otpservice.logs import configure_logging
from otpservice.optouts import OptOuts
from otpservice.otp import OtpService
from otpservice.pacing import SendPacer
from otpservice.periodic import every
from otpservice.privacy import PersonalData
from otpservice.replies import KeywordReplies, ReplyEntry, ReplyWorker
from otpservice.sealing import MessageSealer, decode_key
from otpservice.settings import load_settings
from otpservice.sms import ProviderChain, build_sender
from otpservice.store import ChallengeStore, IdempotencyStore, KeySpace, StoreCommands, connect
from otpservice.store.audit import AuditLog
from otpservice.store.feed import EventFeed
from otpservice.store.fraud import FraudGuardStore
from otpservice.store.inbound import InboundStore
from otpservice.store.numbers import NumberRecords
from otpservice.store.optouts import OptOutStore
from otpservice.store.outbox import OutboxEntry, QueueStore
from otpservice.store.quotas import QuotaStore
from otpservice.store.rates import SendRates
from otpservice.store.stats import StatsStore
from otpservice.web import ROUTES
from otpservice.web.guards import Authenticator, authorize
from otpservice.web.observe import observe_requests
from otpservice.web.problems import EXCEPTION_HANDLERS
from otpservice.web.webhooks import WebhookAuth

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from otpservice.queue_worker import QueueWorker
    from otpservice.settings import Settings
    from otpservice.sms import SmsProvider
    from otpservice.store import StoreClient

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024
# How often the event stream is trimmed to privacy.retention_days besides on every append.
RETENTION_CHECK_SECONDS = 600

OPENAPI_CONFIG = OpenAPIConfig(
    title="otpservice",
    version=__version__,
    description="Issue and verify SMS one-time codes. Errors are RFC 9457 problems with a "
    "stable `code`.",
    path="/openapi",
    render_plugins=[JsonRenderPlugin()],
)


class Runtime:
    """What runs in one process: the use cases, and the delivery worker beside them.

    ``start`` and ``stop`` are the app's lifespan (and the ``worker`` command's whole life).
    """

    def __init__(
        self,
        settings: Settings,
        client: StoreClient,
        *,
        sms: SmsProvider | None = None,
        hasher: CodeHasher | None = None,
    ) -> None:
        """``sms`` replaces the configured providers (tests, benchmarks); it stays the caller's."""
        secrets = settings.secrets
        if not secrets.pepper or not secrets.index_key or not secrets.outbox_key:
            raise ConfigError(
                "secrets.pepper, secrets.index_key and secrets.outbox_key are required"
            )
        self.settings = settings
        keys = KeySpace(settings.redis.key_prefix, secrets.index_key)
        self._commands = commands = StoreCommands(client, settings.redis)
        if hasher is None:
            previous = secrets.previous_pepper
            hasher = CodeHasher(
                settings.hashing,
                Pepper(secrets.pepper),
                Pepper(previous) if previous else None,
                threads=settings.hashing_threads,
            )
        previous_key = secrets.previous_outbox_key
        sealer = MessageSealer(
            decode_key(secrets.outbox_key, "secrets.outbox_key"),
            decode_key(previous_key, "secrets.previous_outbox_key") if previous_key else None,
        )
        challenges = ChallengeStore(commands, keys, settings)
        outbox = QueueStore(commands, keys, "outbox", OutboxEntry)
        callback = settings.events.callback_url
        event_queue = QueueStore(commands, keys, "events", AppEvent) if callback else None
        retention_ms = settings.privacy.retention_days * 86_400_000
        self.feed = EventFeed(commands, keys, retention_ms)
        self.audit = AuditLog(commands, keys, retention_ms)
        events = AppEvents(event_queue, self.feed if settings.events.stream else None, self.audit)
        self.live = LiveSettings(settings)
        self.analytics = Analytics(self.live, StatsStore(commands, keys))
        self.abuse = AbusePolicy(
            self.live, quotas=QuotaStore(commands, keys), fraud=FraudGuardStore(commands, keys),
            events=events,
        )  # fmt: skip
        self._owns_providers = sms is None
        self.providers = build_sender(settings) if sms is None else ProviderChain(
            [sms], breaker_failures=settings.sms.breaker_failures,
            breaker_seconds=settings.sms.breaker_seconds,
        )  # fmt: skip
        self.service = OtpService(
            settings,
            keys=keys,
            challenges=challenges,
            idempotency=IdempotencyStore(commands, keys),
            hasher=hasher,
            outbox=outbox,
            sealer=sealer,
            events=events,
            abuse=self.abuse,
            analytics=self.analytics,
        )
        self.outbox = outbox
        self.challenges = challenges
        self.keys = keys
        self.events = events
        optout_store = OptOutStore(commands, keys)
        self.optouts = OptOuts(optout_store, events, self.analytics)
        self._sealer, self._pacer = sealer, SendPacer(SendRates(commands, keys), settings)
        inbound_store = InboundStore(commands, keys)
        reply_queue = QueueStore(commands, keys, "replies", ReplyEntry)
        self.inbound = InboundMessages(
            settings, optouts=self.optouts, events=events, store=inbound_store,
            replies=KeywordReplies(settings, queue=reply_queue, store=inbound_store,
                                   sealer=sealer),
        )  # fmt: skip
        self.personal_data = PersonalData(
            NumberRecords(commands, keys), self.feed, optout_store, keys, event_queue
        )
        self.worker = self.delivery_worker()
        self.replier = ReplyWorker(
            reply_queue, providers=self.providers, sealer=sealer, pacer=self._pacer,
            settings=settings,
        )  # fmt: skip
        self._http = httpx.AsyncClient(follow_redirects=False)
        self.relay = (
            EventRelay(
                event_queue, callback_url=callback, secret=secrets.events_secret or "",
                client=self._http, claim_idle_ms=settings.claim_idle_seconds * 1000,
            )
            if event_queue is not None and callback
            else None
        )  # fmt: skip
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def delivery_worker(self, consumer: str | None = None) -> DeliveryWorker:
        """A delivery worker on this runtime's outbox (``consumer``: its name in the group)."""
        return DeliveryWorker(
            self.settings, outbox=self.outbox, challenges=self.challenges, pacer=self._pacer,
            keys=self.keys, providers=self.providers, sealer=self._sealer, events=self.events,
            optouts=self.optouts, analytics=self.analytics, consumer=consumer,
        )  # fmt: skip

    async def start(self, *, deliver: bool | None = None) -> None:
        """Connect to the store, watch the config file, then start the workers
        (``outbox.workers_in_process``)."""
        await self.service.start()
        self._stop.clear()
        self._tasks = [
            asyncio.create_task(every(WATCH_SECONDS, self._stop, self.live.check_file)),
            asyncio.create_task(
                every(FRAUD_FLUSH_SECONDS, self._stop, self.abuse.flush_fraud_counts)
            ),
            asyncio.create_task(every(ANALYTICS_FLUSH_SECONDS, self._stop, self.analytics.flush)),
        ]
        if self.settings.outbox.workers_in_process if deliver is None else deliver:
            workers: list[QueueWorker[Any]] = [self.worker, self.replier]
            if self.relay is not None:
                workers.append(self.relay)
            self._tasks += [asyncio.create_task(w.run(self._stop)) for w in workers]
            self._tasks.append(
                asyncio.create_task(every(RETENTION_CHECK_SECONDS, self._stop, self._trim_feed))
            )

    async def _trim_feed(self) -> None:
        """Trim the event stream to the retention, traffic or not."""
        try:
            trimmed = await self.feed.trim(int(time.time() * 1000))
        except Unavailable:
            return  # next time
        if trimmed:
            log.info("event stream: %d entries past the retention removed", trimmed)

    async def stop(self) -> None:
        """Stop the workers (work in hand finishes), release threads and connections."""
        self._stop.set()
        for task in self._tasks:
            await task
        self._tasks = []
        self.service.close()
        await self._commands.close()
        await self._http.aclose()
        if self._owns_providers:
            await self.providers.aclose()


def create_app_from_environment() -> Litestar:
    """The app of one worker process of ``otpservice serve --workers N``.

    Each worker reads the same config (``OTP_CONFIG`` and ``OTP_*``) the parent validated.
    """
    settings = load_settings()
    configure_logging(settings.log_level, settings.effective_log_format)
    return create_app(settings)


def create_app(
    settings: Settings,
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
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, runtime.live.reload)
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
                "otp": runtime.service,
                "runtime": runtime,
                "webhook_auth": WebhookAuth(settings),
                "pod_port": settings.pod_listener.port if settings.pod_listener else None,
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
