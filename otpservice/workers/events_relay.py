"""The events relay: appends queued events (``usecases/events.py``) to the event stream apps
pull from, and POSTs them to the app's callback URL, signed the Standard Webhooks way,
retrying until it answers 2xx or a day has passed (each when configured)."""

from __future__ import annotations

import logging
import time
from datetime import datetime  # noqa: TC003 (msgspec reads the annotations at run time)
from typing import TYPE_CHECKING

import httpx
import msgspec

from otpservice.crypto.webhook_signing import WebhookSigner
from otpservice.models import datetime_from_ms
from otpservice.usecases.events import AppEvent, EventData
from otpservice.workers.queue_worker import QueueWorker, retry_delay

if TYPE_CHECKING:
    from otpservice.store.feed import EventFeed
    from otpservice.store.queues import QueueItem, QueueStore

log = logging.getLogger("otpservice.events")  # a log field: kept as named before the move

RETRY_BASE_SECONDS = 5.0
RETRY_MAX_SECONDS = 300.0


class EventPayload(msgspec.Struct, frozen=True):
    """What the app receives: the Standard Webhooks payload shape."""

    type: str
    timestamp: datetime
    data: EventData


class EventRelay(QueueWorker[AppEvent]):
    """Appends queued events to the event stream and POSTs them to the app's callback URL,
    signed; retries a POST until it answers 2xx."""

    queue_name = "events"

    def __init__(
        self,
        queue: QueueStore[AppEvent],
        *,
        feed: EventFeed | None,
        feed_bodies: bool = False,
        callback_url: str | None,
        secret: str | None,
        client: httpx.AsyncClient,
        claim_idle_ms: int,
        consumer: str | None = None,
    ) -> None:
        super().__init__(queue, concurrency=8, claim_idle_ms=claim_idle_ms, consumer=consumer)
        self._feed = feed
        self._feed_bodies = feed_bodies
        # Validation requires events_secret with a callback URL.
        self._post_to = (callback_url, WebhookSigner(secret)) if callback_url and secret else None
        self._client = client

    async def handle(self, item: QueueItem[AppEvent]) -> None:
        """Relay one event; on a failed POST, schedule a retry (or give up after a day)."""
        event = item.entry
        if event is None:
            await self._queue.finish(item)
            return
        if self._feed is not None and not event.fed:
            # At least once: a relay that dies before finishing appends it again.
            fields = event.feed_fields(with_body=self._feed_bodies)
            await self._feed.append(fields, int(time.time() * 1000))
            event = msgspec.structs.replace(event, fed=True)
        if self._post_to is None:
            await self._queue.finish(item)
            return
        url, signer = self._post_to
        body = msgspec.json.encode(
            EventPayload(
                type=event.type,
                timestamp=datetime_from_ms(event.occurred_at_ms),
                data=event.data,
            )
        )
        headers = signer.headers(event.id, body)
        try:
            response = await self._client.post(url, content=body, headers=headers, timeout=10)
            accepted = response.is_success
            why = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            accepted, why = False, type(exc).__name__
        if accepted:
            await self._queue.finish(item)
            return
        delay = retry_delay(event.attempt, RETRY_BASE_SECONDS, RETRY_MAX_SECONDS)
        due_ms = int((time.time() + delay) * 1000)
        if due_ms >= event.deadline_ms:
            log.warning("events: %s given up after a day (%s)", event.id, why)
            await self._queue.finish(item)
            return
        log.info("events: the app did not take %s (%s); retrying", event.id, why)
        await self._queue.retry_later(
            self.consumer, item, msgspec.structs.replace(event, attempt=event.attempt + 1), due_ms
        )
