"""The composition root: ``Runtime`` builds every collaborator of one process from the checked
settings: the stores, the use cases (``Services``) and the workers beside them.

Collaborators are plain constructor arguments, built here in a few short builders, not
Litestar dependencies: resolving dependencies cost more per request than the handlers do.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from otpservice.config.live import WATCH_SECONDS, LiveSettings
from otpservice.config.schema import ValidSettings
from otpservice.crypto.codes import CodeHasher, Pepper
from otpservice.crypto.sealing import MessageSealer, decode_key
from otpservice.crypto.totp import TotpKeys
from otpservice.crypto.webhook_signing import WebhookSigner
from otpservice.errors import Unavailable
from otpservice.models import OutboxEntry
from otpservice.sms.chain import ProviderChain
from otpservice.sms.factory import build_sender
from otpservice.store import ChallengeStore, IdempotencyStore, KeySpace, StoreCommands
from otpservice.store.audit import AuditLog
from otpservice.store.factors import FactorStore
from otpservice.store.feed import EventFeed
from otpservice.store.fraud import FraudGuardStore
from otpservice.store.inbound import InboundStore
from otpservice.store.numbers import NumberRecords
from otpservice.store.optouts import OptOutStore
from otpservice.store.queues import QueueStore
from otpservice.store.quotas import QuotaStore
from otpservice.store.rates import SendRates
from otpservice.store.stats import StatsStore
from otpservice.usecases.abuse import FRAUD_LOOP_SECONDS, AbusePolicy
from otpservice.usecases.analytics import FLUSH_SECONDS as ANALYTICS_FLUSH_SECONDS
from otpservice.usecases.analytics import Analytics
from otpservice.usecases.events import AppEvent, AppEvents
from otpservice.usecases.factors import TotpFactors
from otpservice.usecases.inbound import InboundMessages
from otpservice.usecases.optouts import OptOuts
from otpservice.usecases.otp import OtpService
from otpservice.usecases.privacy import PersonalData
from otpservice.usecases.replies import KeywordReplies, ReplyEntry
from otpservice.usecases.services import Services
from otpservice.validation import fixed_codes_of, load_settings
from otpservice.workers.delivery import DeliveryWorker
from otpservice.workers.events_relay import EventRelay
from otpservice.workers.pacing import SendPacer
from otpservice.workers.periodic import every
from otpservice.workers.queue_worker import run_together
from otpservice.workers.replies import ReplyWorker

if TYPE_CHECKING:
    from otpservice.sms import SmsProvider
    from otpservice.store import StoreClient
    from otpservice.workers.queue_worker import QueueWorker

log = logging.getLogger("otpservice.app")  # a log field: kept as named before the move

# How often the event stream is trimmed to privacy.retention_days besides on every append.
RETENTION_CHECK_SECONDS = 600


@dataclass(frozen=True, slots=True)
class Stores:
    """Every Redis-backed store of one process, on one set of script connections."""

    commands: StoreCommands
    challenges: ChallengeStore
    idempotency: IdempotencyStore
    outbox: QueueStore[OutboxEntry]
    replies: QueueStore[ReplyEntry]
    # None when neither a callback URL nor the event stream is on: nothing is queued for the app.
    events: QueueStore[AppEvent] | None
    feed: EventFeed
    audit: AuditLog
    stats: StatsStore
    quotas: QuotaStore
    fraud: FraudGuardStore
    optouts: OptOutStore
    inbound: InboundStore
    numbers: NumberRecords
    rates: SendRates
    factors: FactorStore


def build_stores(client: StoreClient, keys: KeySpace, settings: ValidSettings) -> Stores:
    """The stores, sharing one ``StoreCommands`` on ``client``."""
    commands = StoreCommands(client, settings.redis)
    retention_ms = settings.privacy.retention_days * 86_400_000
    with_events = settings.events.callback_url is not None or settings.events.stream
    queue_shards = settings.redis.queue_shards
    return Stores(
        commands=commands,
        challenges=ChallengeStore(commands, keys, settings),
        idempotency=IdempotencyStore(commands, keys),
        outbox=QueueStore(commands, keys, "outbox", OutboxEntry, shards=queue_shards),
        replies=QueueStore(commands, keys, "replies", ReplyEntry, shards=queue_shards),
        events=(
            QueueStore(commands, keys, "events", AppEvent, shards=queue_shards)
            if with_events
            else None
        ),
        feed=EventFeed(commands, keys, retention_ms),
        audit=AuditLog(commands, keys, retention_ms),
        stats=StatsStore(commands, keys),
        quotas=QuotaStore(commands, keys, shards=settings.redis.shards),
        fraud=FraudGuardStore(commands, keys),
        optouts=OptOutStore(commands, keys),
        inbound=InboundStore(commands, keys, seen_seconds=retention_ms // 1000),
        numbers=NumberRecords(commands, keys),
        rates=SendRates(commands, keys),
        factors=FactorStore(commands, settings.totp_lockout, attempts=settings.code.max_attempts),
    )


def build_hasher(settings: ValidSettings) -> CodeHasher:
    """The code hasher with the pepper and, while rotating, the previous one."""
    secrets = settings.secrets
    previous = secrets.previous_pepper
    return CodeHasher(
        settings.hashing,
        Pepper(secrets.pepper),
        Pepper(previous) if previous else None,
        threads=settings.hashing_threads,
    )


def build_sealer(settings: ValidSettings) -> MessageSealer:
    """The outbox sealer with the outbox key and, while rotating, the previous one."""
    previous = settings.secrets.previous_outbox_key
    return MessageSealer(
        decode_key(settings.secrets.outbox_key, "secrets.outbox_key"),
        decode_key(previous, "secrets.previous_outbox_key") if previous else None,
    )


def build_totp_keys(settings: ValidSettings) -> TotpKeys | None:
    """The TOTP keys (and, while rotating, the previous one); None without ``totp_key``."""
    secrets = settings.secrets
    if not secrets.totp_key:
        return None
    previous = secrets.previous_totp_key
    return TotpKeys(
        decode_key(secrets.totp_key, "secrets.totp_key"),
        decode_key(previous, "secrets.previous_totp_key") if previous else None,
    )


def build_services(
    settings: ValidSettings,
    stores: Stores,
    keys: KeySpace,
    *,
    hasher: CodeHasher,
    sealer: MessageSealer,
) -> Services:
    """The use cases on ``stores``."""
    events = AppEvents(stores.events, stores.audit)
    live = LiveSettings(settings, load=load_settings)
    analytics = Analytics(live, stores.stats)
    abuse = AbusePolicy(live, quotas=stores.quotas, fraud=stores.fraud, events=events)
    optouts = OptOuts(stores.optouts, events, analytics, sealer)
    replies = KeywordReplies(settings, queue=stores.replies, store=stores.inbound, sealer=sealer)
    totp = TotpFactors(
        live,
        store=stores.factors,
        keys=keys,
        totp_keys=build_totp_keys(settings),
        hasher=hasher,
        abuse=abuse,
        events=events,
        analytics=analytics,
    )
    return Services(
        otp=OtpService(
            settings,
            keys=keys,
            challenges=stores.challenges,
            idempotency=stores.idempotency,
            hasher=hasher,
            outbox=stores.outbox,
            sealer=sealer,
            events=events,
            abuse=abuse,
            analytics=analytics,
            audit=stores.audit,
            fixed_codes=fixed_codes_of(settings),
        ),
        abuse=abuse,
        analytics=analytics,
        optouts=optouts,
        inbound=InboundMessages(
            settings, optouts=optouts, events=events, store=stores.inbound, replies=replies
        ),
        personal_data=PersonalData(
            stores.numbers, stores.feed, stores.optouts, keys, stores.events, stores.factors
        ),
        totp=totp,
        events=events,
        audit=stores.audit,
        live=live,
    )


class Runtime:
    """What runs in one process: the use cases, and the workers beside them.

    ``start`` and ``stop`` are the app's lifespan (and the ``worker`` command's whole life).
    """

    def __init__(
        self,
        settings: ValidSettings,
        client: StoreClient,
        *,
        sms: SmsProvider | None = None,
        hasher: CodeHasher | None = None,
    ) -> None:
        """``sms`` replaces the configured providers (tests, benchmarks); it stays the caller's.

        Raises:
            TypeError: ``settings`` did not come from ``load_settings`` or ``validate_settings``.
        """
        if not isinstance(settings, ValidSettings):
            raise TypeError(
                "a Runtime is built from ValidSettings (validation.load_settings or "
                f"validate_settings), not {type(settings).__name__}"
            )
        self.settings = settings
        self.keys = KeySpace(
            settings.redis.key_prefix, settings.secrets.index_key, opaque_ids=settings.ids.opaque
        )
        self.stores = build_stores(client, self.keys, settings)
        self._sealer = build_sealer(settings)
        self.services = build_services(
            settings,
            self.stores,
            self.keys,
            hasher=hasher or build_hasher(settings),
            sealer=self._sealer,
        )
        self._owns_providers = sms is None
        self.providers = (
            build_sender(settings, signer=WebhookSigner)
            if sms is None
            else ProviderChain(
                [sms],
                breaker_failures=settings.sms.breaker_failures,
                breaker_seconds=settings.sms.breaker_seconds,
            )
        )
        self._pacer = SendPacer(self.stores.rates, settings)
        self.worker = self.delivery_worker()
        self.replier = ReplyWorker(
            self.stores.replies,
            providers=self.providers,
            sealer=self._sealer,
            pacer=self._pacer,
            settings=settings,
        )
        self._http = httpx.AsyncClient(follow_redirects=False)
        self.relay = self._events_relay()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def delivery_worker(self, consumer: str | None = None) -> DeliveryWorker:
        """A delivery worker on this runtime's outbox (``consumer``: its name in the group)."""
        services = self.services
        return DeliveryWorker(
            self.settings,
            outbox=self.stores.outbox,
            challenges=self.stores.challenges,
            pacer=self._pacer,
            keys=self.keys,
            providers=self.providers,
            sealer=self._sealer,
            events=services.events,
            optouts=services.optouts,
            analytics=services.analytics,
            consumer=consumer,
        )

    def _events_relay(self) -> EventRelay | None:
        queue = self.stores.events
        if queue is None:
            return None
        return EventRelay(
            queue,
            feed=self.stores.feed if self.settings.events.stream else None,
            feed_bodies=self.settings.events.feed_bodies,
            callback_url=self.settings.events.callback_url,
            secret=self.settings.secrets.events_secret,
            client=self._http,
            claim_idle_ms=self.settings.claim_idle_seconds * 1000,
        )

    async def start(self, *, deliver: bool | None = None) -> None:
        """Connect to the store, watch the config file, then start the workers
        (``outbox.workers_in_process``)."""
        services = self.services
        await services.otp.start()
        self._stop.clear()
        self._tasks = [
            asyncio.create_task(every(WATCH_SECONDS, self._stop, services.live.check_file)),
            asyncio.create_task(
                every(FRAUD_LOOP_SECONDS, self._stop, services.abuse.refresh_fraud_guard)
            ),
            asyncio.create_task(
                every(ANALYTICS_FLUSH_SECONDS, self._stop, services.analytics.flush)
            ),
        ]
        if self.settings.outbox.workers_in_process if deliver is None else deliver:
            workers: list[QueueWorker[Any]] = [self.worker, self.replier]
            if self.relay is not None:
                workers.append(self.relay)
            self._tasks.append(asyncio.create_task(run_together(workers, self._stop)))
            self._tasks.append(
                asyncio.create_task(every(RETENTION_CHECK_SECONDS, self._stop, self._trim_feed))
            )
            # Once a pass finds nothing to seal, the job returns at once.
            self._tasks.append(
                asyncio.create_task(
                    every(RETENTION_CHECK_SECONDS, self._stop, services.optouts.seal_index)
                )
            )

    async def _trim_feed(self) -> None:
        """Trim the event stream to the retention, traffic or not."""
        try:
            trimmed = await self.stores.feed.trim(int(time.time() * 1000))
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
        self.services.otp.close()
        await self.stores.commands.close()
        await self._http.aclose()
        if self._owns_providers:
            await self.providers.aclose()
