"""The events relay: POSTs queued events (``usecases/events.py``) to the app's callback URL,
signed the Standard Webhooks way, retrying until it answers 2xx or a day has passed."""

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
    """POSTs queued events to the app's callback URL, signed; retries until it answers 2xx."""

    queue_name = "events"

    def __init__(
        self,
        queue: QueueStore[AppEvent],
        *,
        callback_url: str,
        secret: str,
        client: httpx.AsyncClient,
        claim_idle_ms: int,
        consumer: str | None = None,
    ) -> None:
        super().__init__(queue, concurrency=8, claim_idle_ms=claim_idle_ms, consumer=consumer)
        self._url = callback_url
        self._signer = WebhookSigner(secret)
        self._client = client

    async def handle(self, item: QueueItem[AppEvent]) -> None:
        """Relay one event; on failure, schedule a retry (or give up after a day)."""
        event = item.entry
        if event is None:
            await self._queue.finish(item)
            return
        body = msgspec.json.encode(
            EventPayload(
                type=event.type,
                timestamp=datetime_from_ms(event.occurred_at_ms),
                data=event.data,
            )
        )
        headers = self._signer.headers(event.id, body)
        try:
            response = await self._client.post(self._url, content=body, headers=headers, timeout=10)
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
