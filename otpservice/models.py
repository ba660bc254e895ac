"""Value types that cross layers: the store returns them, the service and web layer use them."""

from __future__ import annotations

import enum
from datetime import UTC, date, datetime
from typing import Literal

import msgspec


def datetime_from_ms(milliseconds: int) -> datetime:
    """Unix milliseconds (what Redis stores) as an aware UTC datetime."""
    return datetime.fromtimestamp(milliseconds / 1000, tz=UTC)


def ceil_seconds(milliseconds: int) -> int:
    """Milliseconds as whole seconds, rounded up: a client that waits that long is never early."""
    return -(-milliseconds // 1000)


class Model(msgspec.Struct, frozen=True, kw_only=True):
    """Base of the internal value types."""


class Destination(Model, frozen=True):
    """Where a code went, and who asked: the number's region, calling code and prefix ("GB",
    "+44", "+4474"), and the fraud guard's source (a keyed digest of the API client and the
    end user's network; empty when not counted).

    Stored with its challenge: the place in its wire form, ``"GB|+44|+4474"`` (``wire``,
    ``parse``), for the analytics (by region) and the fraud guard (by calling code and
    prefix), and the source in a field of its own, so the release before still reads the
    place.
    """

    region: str = ""
    calling_code: str = ""
    prefix: str = ""
    source: str = ""

    @classmethod
    def parse(cls, text: str, *, source: str = "") -> Destination:
        """The destination ``wire`` wrote (parts missing from older records are empty), asked
        for by ``source``."""
        region, _, rest = text.partition("|")
        calling_code, _, prefix = rest.partition("|")
        return cls(region=region, calling_code=calling_code, prefix=prefix, source=source)

    def wire(self) -> str:
        """The stored form of the place: ``"GB|+44|+4474"``, or ``""`` for nowhere known."""
        if not (self.region or self.calling_code or self.prefix):
            return ""
        return f"{self.region}|{self.calling_code}|{self.prefix}"

    def watched(self) -> list[str]:
        """What the fraud guard watches here: the calling code, then the prefix (or nothing)."""
        return [self.calling_code, self.prefix] if self.calling_code and self.prefix else []


NOWHERE = Destination()

# Whom a tripped fraud guard refuses: everyone, or only the sources that made it trip.
FraudScope = Literal["everyone", "sources"]


class ChallengeStatus(enum.StrEnum):
    """Where a challenge stands."""

    PENDING = "pending"
    APPROVED = "approved"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    TOO_MANY_ATTEMPTS = "too_many_attempts"


class ChallengeRequest(Model, frozen=True):
    """What a login app asks for when it wants a code sent."""

    phone: str
    purpose: str = "login"
    locale: str | None = None
    client_ip: str | None = None


class IssuedChallenge(Model, frozen=True):
    """A challenge just created (or replayed for the same Idempotency-Key)."""

    challenge_id: str
    created_at_ms: int
    expires_at_ms: int
    attempts_left: int
    resend_after_ms: int
    status: ChallengeStatus = ChallengeStatus.PENDING


class DeliveryStatus(enum.StrEnum):
    """Where the challenge's SMS stands; it only moves forward (see record_delivery.lua)."""

    QUEUED = "queued"
    SENDING = "sending"
    RETRYING = "retrying"
    SENT = "sent"
    UNKNOWN = "unknown"
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    FAILED = "failed"


class Delivery(Model, frozen=True):
    """The delivery state of a challenge's SMS."""

    status: DeliveryStatus = DeliveryStatus.QUEUED
    provider: str | None = None
    message_id: str | None = None
    detail: str | None = None
    updated_at_ms: int | None = None
    sent_at_ms: int | None = None


class ChallengeView(Model, frozen=True):
    """What may be shown of a challenge: never its code or hash, only a masked number."""

    challenge_id: str
    status: ChallengeStatus
    attempts_left: int
    created_at_ms: int
    expires_at_ms: int
    masked_phone: str
    purpose: str
    delivery: Delivery = Delivery()


class DeliveryReport(Model, frozen=True):
    """What is known of one delivery step: the provider, its message id, and why (each may be
    empty: a report that names no provider keeps the one recorded)."""

    provider: str = ""
    message_id: str = ""
    detail: str = ""


NO_REPORT = DeliveryReport()


# What record_delivery.lua did: wrote the state ("ok", also for a repeated report), kept a
# later one ("stale"), refused SENDING for a challenge that ended ("ended") or for a number
# that opted out ("opted_out"), or found no challenge ("missing").
DeliveryOutcome = Literal["ok", "stale", "ended", "opted_out", "missing"]


class DeliveryUpdate(Model, frozen=True):
    """What ``record_delivery`` answered: whether it wrote, and the state it found."""

    outcome: DeliveryOutcome
    previous: DeliveryStatus = DeliveryStatus.QUEUED
    provider: str = ""
    send_id: str = ""
    where: Destination = NOWHERE


class CodeHash(Model, frozen=True):
    """The keyed argon2id hash of a code: raw salt and digest, the pepper id and the parameters."""

    pepper_id: str
    params: str
    digest: bytes


class Reservation(Model, frozen=True):
    """A counted verification attempt: its id (settles it, idempotently) and the hash to check."""

    reservation_id: str
    code_hash: CodeHash


class ApprovedChallenge(Model, frozen=True):
    """The one successful verification of a challenge."""

    challenge_id: str
    approved_at_ms: int
    where: Destination = NOWHERE
    created_at_ms: int = 0


class InDoubt(Model, frozen=True):
    """A keyed request answered 503 after its challenge may have been written: the challenge,
    and its SMS (sealed) to queue, at most once, when a retry finds the challenge there."""

    challenge_id: str
    entry: OutboxEntry
    # The challenge as issued, when the write was confirmed and the queueing was in doubt.
    issued: IssuedChallenge | None = None
    # The outbox shard that may hold its SMS (a retry adds it there, once); None: not queued.
    queue_shard: int | None = None


class IdempotencyRecord(Model, frozen=True):
    """What an Idempotency-Key stands for: the request's fingerprint and, once done, the result
    (or, after a 503 in doubt, what a retry must finish)."""

    fingerprint: str
    result: IssuedChallenge | None = None
    in_doubt: InDoubt | None = None
    resolving: bool = False  # a retry is finishing the request in doubt
    claim_token: str = ""  # tells this request's pending claim from another's


# Who changed an opt-out through the service: a STOP or START, an operator, or a provider that
# refused a send because the number opted out with it.
OptOutSource = Literal["keyword", "admin", "provider_error"]


class OptOut(Model, frozen=True):
    """A number that must get no message, since when and why."""

    phone: str
    since_ms: int
    # An OptOutSource, or what an imported file named (a backup, another provider's export).
    source: str
    sender: str  # which of our senders it came through, if known
    detail: str


class OptOutChange(Model, frozen=True):
    """One change of a number's opt-out: when, which way, and where it came from."""

    at_ms: int
    opted_out: bool
    source: str
    sender: str


class InboundSms(Model, frozen=True):
    """A message a person sent to one of our numbers."""

    sender: str  # E.164
    recipient: str  # our number it came to
    body: str
    message_id: str  # the provider's id; a repeat of the same message has the same one


class OutboxEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One message as the outbox holds it: the recipient and text only sealed."""

    send_id: str
    challenge_id: str
    key_id: str
    sealed: bytes
    attempt: int = 0
    first_attempt_at: float
    deadline_ms: int
    # Set when the outcome of an attempt is unknown at a provider that drops repeats: the
    # message may only be repeated there.
    provider: str = ""


TotpAlgorithm = Literal["SHA1", "SHA256", "SHA512"]
# A factor's state: pending until its first code activates it.
FactorStatus = Literal["pending", "active"]


class TotpParams(Model, frozen=True):
    """A factor's code parameters, fixed at enrolment (a config change applies to new ones)."""

    digits: Literal[6, 8] = 6
    period_seconds: int = 30
    algorithm: TotpAlgorithm = "SHA1"


class SealedFactor(Model, frozen=True):
    """A factor's secret as the store holds it (sealed), with what checking a code needs."""

    random_part: str
    sealed_secret: str
    params: TotpParams
    # The last step a code of it was accepted for (-1: none yet).
    last_step: int = -1


class RecoveryHashes(Model, frozen=True):
    """A set of recovery codes as stored: one argon2id hash per slot, the key id and the
    argon2 parameters they were made with."""

    key_id: str
    params: str
    digests: list[bytes]


class StoredFactor(Model, frozen=True):
    """A factor as listed: what the store holds about it, its label still sealed."""

    random_part: str
    status: FactorStatus
    sealed_label: str
    created_at_ms: int
    expires_at_ms: int | None
    last_used_at_ms: int | None
    recovery_codes_left: int


class FixedCode(Model, frozen=True):
    """A test number's fixed code (``test_numbers``): the code itself, read from its file, or
    its argon2id PHC string; and the last day it works."""

    expires_on: date
    code: str | None = None
    phc: str | None = None
