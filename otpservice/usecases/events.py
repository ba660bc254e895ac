"""Events for the login app, POSTed to its callback URL the Standard Webhooks way, with retries:

- ``challenge.delivered`` / ``challenge.failed``: a challenge's SMS reached a final state;
- ``inbound.message``: a person replied to one of our numbers (keyword or not);
- ``optout.changed``: a number opted out or back in;
- ``security.lockout``: a number (or an authenticator-app subject) was locked after too many
  wrong codes;
- ``totp.activated`` / ``totp.removed``: a subject's authenticator-app factor became active or
  was removed (replaced, or removed by the app or an operator);
- ``recovery.used``: a subject used one of its recovery codes;
- ``fraud.tripped`` / ``fraud.cleared``: the fraud guard paused or resumed a destination.

An event is queued (a durable, sharded queue like the outbox) and relayed by ``EventRelay``
workers (``workers/events_relay.py``): appended to the event stream (``EventFeed``, for apps that
pull) unless ``events.stream`` is off, and POSTed to the callback URL when one is set. Nothing
is queued when neither is on. The relay, not the request, writes the stream, so its one slot is
on no request's path and its master's failover holds up no delivery. Its ``webhook-id`` is
stable (what happened, to what), so a repeat (a report that came twice, a relay retried after a
timeout) can be dropped by the app: delivery is at least once.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Literal

import msgspec

from otpservice.models import DeliveryStatus, FraudScope, datetime_from_ms
from otpservice.phone import mask_numbers

if TYPE_CHECKING:
    from otpservice.store.audit import AuditLog
    from otpservice.store.queues import QueueStore

# How long an event is retried before it is given up (the app was down all that time).
EVENT_LIFETIME_MS = 24 * 3600 * 1000
_EVENT_TYPES: dict[DeliveryStatus, EventType] = {
    DeliveryStatus.DELIVERED: "challenge.delivered",
    DeliveryStatus.UNDELIVERED: "challenge.failed",
    DeliveryStatus.FAILED: "challenge.failed",
}


EventData = dict[str, str | int | bool | None]
EventType = Literal[
    "challenge.delivered",
    "challenge.failed",
    "inbound.message",
    "optout.changed",
    "security.lockout",
    "fraud.tripped",
    "fraud.cleared",
    "totp.activated",
    "totp.removed",
    "recovery.used",
]


class ChallengeDeliveryEnded(msgspec.Struct, frozen=True, kw_only=True):
    """``challenge.delivered``, ``challenge.failed``: the challenge's SMS reached a final state."""

    challenge_id: str
    status: DeliveryStatus
    provider: str | None
    detail: str | None


class InboundMessage(msgspec.Struct, frozen=True, kw_only=True):
    """``inbound.message``: a person replied to one of our numbers."""

    message_id: str
    sender: str = msgspec.field(name="from")
    to: str
    body: str
    keyword: str | None


class OptOutChanged(msgspec.Struct, frozen=True, kw_only=True):
    """``optout.changed``: a number opted out (``opted_out``) or back in."""

    phone: str
    opted_out: bool
    source: str


class Lockout(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """``security.lockout``: the challenge's number, or an API client's subject (its
    authenticator-app codes), was locked after too many wrong codes."""

    challenge_id: str | None = None
    subject: str | None = None
    client: str | None = None
    locked_for_seconds: int


class FactorChanged(msgspec.Struct, frozen=True, kw_only=True):
    """``totp.activated``, ``totp.removed``: a subject's authenticator-app factor."""

    factor_id: str
    subject: str
    client: str


class RecoveryUsed(msgspec.Struct, frozen=True, kw_only=True):
    """``recovery.used``: a subject logged in with a recovery code."""

    factor_id: str
    subject: str
    client: str
    recovery_codes_left: int


class FraudGuardChanged(msgspec.Struct, frozen=True, kw_only=True):
    """``fraud.tripped`` and ``fraud.cleared``: the fraud guard paused or resumed a destination."""

    destination: str
    sent: int
    verified: int
    source: str
    # Whom a trip refuses: everyone, or only the sources that made it trip (null for a clear).
    scope: FraudScope | None = None


EventBody = (
    ChallengeDeliveryEnded
    | InboundMessage
    | OptOutChanged
    | Lockout
    | FraudGuardChanged
    | FactorChanged
    | RecoveryUsed
)
# Each event type and the shape of its ``data``: the spec's webhooks are built from this.
EVENT_DATA: dict[EventType, type[EventBody]] = {
    "challenge.delivered": ChallengeDeliveryEnded,
    "challenge.failed": ChallengeDeliveryEnded,
    "inbound.message": InboundMessage,
    "optout.changed": OptOutChanged,
    "security.lockout": Lockout,
    "fraud.tripped": FraudGuardChanged,
    "fraud.cleared": FraudGuardChanged,
    "totp.activated": FactorChanged,
    "totp.removed": FactorChanged,
    "recovery.used": RecoveryUsed,
}
# The events the service also keeps in the audit stream (operators' changes are recorded by
# the routes that make them, with the client's name).
AUDITED = frozenset({"security.lockout", "fraud.tripped", "fraud.cleared"})


def _masked(data: EventData) -> dict[str, object]:
    return {k: mask_numbers(v) if isinstance(v, str) else v for k, v in data.items()}


class AppEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One event waiting for the app."""

    id: str
    type: str
    occurred_at_ms: int
    data: EventData
    attempt: int = 0
    deadline_ms: int
    fed: bool = False  # appended to the event stream already (a POST is being retried)

    def feed_fields(self, *, with_body: bool) -> dict[str, str]:
        """The event as an entry of the event stream: the POSTed event's fields, without a
        reply's text unless ``with_body`` (``events.feed_bodies``)."""
        data = self.data if with_body else {k: v for k, v in self.data.items() if k != "body"}
        return {
            "id": self.id,
            "type": self.type,
            "timestamp": msgspec.json.encode(datetime_from_ms(self.occurred_at_ms))
            .decode()
            .strip('"'),
            "data": msgspec.json.encode(data).decode(),
        }


class AppEvents:
    """Queues events for the app (its callback URL, the event stream) and audits some."""

    def __init__(self, queue: QueueStore[AppEvent] | None, audit: AuditLog) -> None:
        self._queue = queue  # None: neither a callback URL nor the event stream is on
        self._audit = audit

    async def delivery_ended(
        self, challenge_id: str, status: DeliveryStatus, *, provider: str, detail: str
    ) -> None:
        """Queue ``challenge.delivered`` or ``challenge.failed`` (other states: nothing)."""
        kind = _EVENT_TYPES.get(status)
        if kind is None:
            return
        data = ChallengeDeliveryEnded(
            challenge_id=challenge_id,
            status=status,
            provider=provider or None,
            detail=detail or None,
        )
        await self._emit(f"{challenge_id}.{kind}", kind, data)

    async def inbound_message(
        self, message_id: str, *, sender: str, recipient: str, body: str, keyword: str | None
    ) -> None:
        """Queue ``inbound.message``: a reply from ``sender`` to our number ``recipient``."""
        data = InboundMessage(
            message_id=message_id, sender=sender, to=recipient, body=body, keyword=keyword
        )
        await self._emit(f"inbound.{message_id}", "inbound.message", data)

    async def optout_changed(self, phone: str, *, opted_out: bool, source: str, at_ms: int) -> None:
        """Queue ``optout.changed`` for ``phone``."""
        data = OptOutChanged(phone=phone, opted_out=opted_out, source=source)
        await self._emit(f"optout.{phone}.{at_ms}", "optout.changed", data)

    async def lockout(self, challenge_id: str, *, locked_for_seconds: int) -> None:
        """Queue ``security.lockout``: the number of ``challenge_id`` was locked."""
        data = Lockout(challenge_id=challenge_id, locked_for_seconds=locked_for_seconds)
        await self._emit(f"lockout.{challenge_id}", "security.lockout", data)

    async def subject_locked(self, subject: str, *, client: str, locked_for_seconds: int) -> None:
        """Queue ``security.lockout``: an API client's subject was locked (TOTP codes)."""
        data = Lockout(subject=subject, client=client, locked_for_seconds=locked_for_seconds)
        await self._emit(f"lockout.{client}.{subject}.{int(time.time())}", "security.lockout", data)

    async def factor_changed(
        self,
        kind: Literal["totp.activated", "totp.removed"],
        factor_id: str,
        *,
        subject: str,
        client: str,
    ) -> None:
        """Queue ``totp.activated`` or ``totp.removed`` for a factor."""
        data = FactorChanged(factor_id=factor_id, subject=subject, client=client)
        await self._emit(f"{kind}.{factor_id}", kind, data)

    async def recovery_used(
        self, factor_id: str, *, subject: str, client: str, codes_left: int, at_ms: int
    ) -> None:
        """Queue ``recovery.used``: a recovery code of the factor was used."""
        data = RecoveryUsed(
            factor_id=factor_id, subject=subject, client=client, recovery_codes_left=codes_left
        )
        await self._emit(f"recovery.{factor_id}.{at_ms}", "recovery.used", data)

    async def fraud_changed(
        self,
        destination: str,
        *,
        tripped: bool,
        sent: int,
        verified: int,
        source: str,
        scope: FraudScope | None = None,
    ) -> None:
        """Queue ``fraud.tripped`` or ``fraud.cleared`` for a destination ("+44", "+4470")."""
        kind: EventType = "fraud.tripped" if tripped else "fraud.cleared"
        data = FraudGuardChanged(
            destination=destination, sent=sent, verified=verified, source=source, scope=scope
        )
        await self._emit(f"{kind}.{destination}.{int(time.time())}", kind, data)

    async def _emit(self, event_id: str, kind: EventType, body: EventBody) -> None:
        data: EventData = msgspec.to_builtins(body)
        now = int(time.time() * 1000)
        if self._queue is not None:
            await self._queue.add(
                AppEvent(
                    id=event_id,
                    type=kind,
                    occurred_at_ms=now,
                    data=data,
                    deadline_ms=now + EVENT_LIFETIME_MS,
                )
            )
        if kind in AUDITED:
            # The audit stream outlives an erasure: it keeps no subject (the app's user id).
            audited = {k: v for k, v in _masked(data).items() if k != "subject"}
            await self._audit.record(kind, actor="service", data=audited)
