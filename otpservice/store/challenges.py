"""ChallengeStore: the challenge scripts' calls and the decoding of their replies."""

from __future__ import annotations

import asyncio
import secrets
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn, cast, get_args

from redis.asyncio.cluster import RedisCluster

from otpservice.errors import (
    ChallengeExpired,
    ChallengeNotFound,
    ChallengeUsed,
    IncorrectCode,
    NumberLocked,
    RateLimited,
    RecipientOptedOut,
    StoreUnavailable,
    TooManyAttempts,
)
from otpservice.models import (
    NO_REPORT,
    NOWHERE,
    ApprovedChallenge,
    ChallengeStatus,
    ChallengeView,
    CodeHash,
    Delivery,
    DeliveryOutcome,
    DeliveryReport,
    DeliveryStatus,
    DeliveryUpdate,
    Destination,
    IssuedChallenge,
    Reservation,
    ceil_seconds,
)
from otpservice.store.scripts import reply_text

if TYPE_CHECKING:
    from otpservice.config.schema import Settings
    from otpservice.store.keys import ChallengeKeys, KeySpace
    from otpservice.store.scripts import StoreCommands

_MS = 1000
# A reservation whose verdict has not come after this long (a crash, a lost reply) counts as a
# failure. Longer than any verification can take: the hashing queue and Redis timeouts included.
RESERVATION_LIFETIME_MS = 30 * _MS
# How many hash tags to try to find a readiness key for each Cluster primary (plenty: slots are
# spread evenly, so a few dozen tags reach every primary of even a large cluster).
READINESS_SHARD_SEARCH = 10_000


# The replies of the challenge scripts, one named tuple per shape (each script's header lists
# them); the first member is always the status.
class IssuedReply(NamedTuple):
    """``issue_challenge.lua``: {"ok", now ms, expires ms, resend-after ms}."""

    status: bytes
    created_at_ms: int
    expires_at_ms: int
    resend_after_ms: int


class RateLimitedReply(NamedTuple):
    """``issue_challenge.lua``: {"rate_limited", rule name, retry-after ms}."""

    status: bytes
    rule: bytes
    retry_after_ms: int


class LockedReply(NamedTuple):
    """``issue_challenge.lua``, ``spend_attempt.lua``: {"locked", retry-after ms}."""

    status: bytes
    retry_after_ms: int


class ReservedReply(NamedTuple):
    """``spend_attempt.lua``: {"ok", argon2 salt and digest, pepper id, argon2 params}."""

    status: bytes
    digest: bytes
    pepper_id: bytes
    params: bytes


class ApprovedReply(NamedTuple):
    """``record_verdict.lua``: {"approved", approved ms, where, created ms, fraud source}."""

    status: bytes
    approved_at_ms: int
    where: bytes
    created_at_ms: int | None
    source: bytes


class IncorrectReply(NamedTuple):
    """``record_verdict.lua``: {"incorrect", attempts left, locked ms (0: not locked)}."""

    status: bytes
    attempts_left: int
    locked_ms: int


class ViewReply(NamedTuple):
    """``read_challenge.lua``: the status and the challenge's public fields."""

    status: bytes
    attempts_left: int
    created_at_ms: int
    expires_at_ms: int
    masked_phone: bytes
    purpose: bytes
    delivery_state: bytes
    provider: bytes
    message_id: bytes
    detail: bytes
    updated_at_ms: bytes
    sent_at_ms: bytes


class DeliveryReply(NamedTuple):
    """``record_delivery.lua``: {outcome, state found, provider, send id, where}."""

    outcome: bytes
    previous: bytes
    provider: bytes
    send_id: bytes
    where: bytes


def seconds_from_ms(milliseconds: int) -> int:
    """A Retry-After in whole seconds: rounded up, and at least one."""
    return max(1, ceil_seconds(milliseconds))


def _encoded(*values: str | int) -> list[bytes]:
    """Script arguments fixed by config, encoded once instead of on every call."""
    return [str(value).encode() for value in values]


_GONE_DETAIL = {
    "approved": "the challenge was already approved",
    "approved_before": "the challenge was already approved",
    "expired": "the challenge has expired",
    "cancelled": "the challenge was cancelled or replaced by a newer one",
}


def _raise_for_status(status: str) -> NoReturn:
    """Raise the error that a script's status reply stands for."""
    if status == "missing":
        raise ChallengeNotFound("no such challenge")
    if status == "too_many_attempts":
        raise TooManyAttempts()
    if status in ("approved", "approved_before"):
        raise ChallengeUsed(_GONE_DETAIL[status])
    if status in _GONE_DETAIL:
        raise ChallengeExpired(_GONE_DETAIL[status])
    raise AssertionError(f"unexpected script reply {status!r}")


# The issue script's challenge arguments when it only checks whether a send would be allowed.
_CHECK_ONLY_ARGS: list[str | bytes] = [*[b""] * 7, *[b"0"] * 3]


class ChallengeStore:
    """Creates, spends, settles, cancels and reads challenges, one atomic script each."""

    def __init__(self, commands: StoreCommands, keys: KeySpace, settings: Settings) -> None:
        self._commands = commands
        self._run = commands.run_script
        self._keys = keys
        self._scripts = commands.scripts
        code, limits, lockout = settings.code, settings.send_limits, settings.lockout
        self._max_attempts = code.max_attempts
        self._code_args = _encoded(
            code.max_attempts, code.ttl_seconds * _MS, code.tombstone_seconds * _MS
        )
        self._min_interval_arg = _encoded(limits.min_interval_seconds * _MS)
        self._window_args = _encoded(
            3600 * _MS,
            limits.per_hour,
            "number_per_hour",
            86400 * _MS,
            limits.per_day,
            "number_per_day",
        )
        self._lockout_args = _encoded(
            lockout.max_failures,
            lockout.base_seconds * _MS,
            lockout.max_seconds * _MS,
            lockout.memory_seconds * _MS,
        )
        self._prepared = False

    async def check_send(self, keys: ChallengeKeys) -> None:
        """Refuse early, writing nothing, if a send to this number would be refused now.

        Raises:
            RateLimited, NumberLocked.
        """
        await self._issue_script(keys, _CHECK_ONLY_ARGS, mode="check")

    async def issue(
        self,
        keys: ChallengeKeys,
        *,
        code_hash: CodeHash,
        client: str,
        masked_phone: str,
        purpose: str,
        where: Destination = NOWHERE,
    ) -> IssuedChallenge:
        """Store a new challenge if the number's lock and send limits allow it.

        Raises:
            RateLimited: a send limit refuses; nothing was counted.
            NumberLocked: the number is locked for failed codes.
        """
        reply = await self._issue_script(
            keys,
            [
                keys.random_part,
                code_hash.digest,
                code_hash.pepper_id,
                code_hash.params,
                client,
                masked_phone,
                purpose,
                *self._code_args,
            ],
            mode="issue",
            where=where,
        )
        issued = IssuedReply(*reply)
        return IssuedChallenge(
            challenge_id=keys.challenge_id,
            created_at_ms=int(issued.created_at_ms),
            expires_at_ms=int(issued.expires_at_ms),
            attempts_left=self._max_attempts,
            resend_after_ms=int(issued.resend_after_ms),
        )

    async def _issue_script(
        self,
        keys: ChallengeKeys,
        challenge_args: list[str | bytes],
        *,
        mode: str,
        where: Destination = NOWHERE,
    ) -> list[Any]:
        reply = await self._run(
            self._scripts.issue_challenge,
            [keys.sends, keys.active, keys.guard, keys.challenge, keys.optout, keys.actives],
            [
                *challenge_args,
                *self._min_interval_arg,
                mode,
                where.wire(),
                where.source,
                *self._window_args,
            ],
        )
        status = reply_text(reply[0])
        if status == "opted_out":
            raise RecipientOptedOut()
        if status == "rate_limited":
            limited = RateLimitedReply(*reply)
            raise RateLimited(
                reply_text(limited.rule), seconds_from_ms(int(limited.retry_after_ms))
            )
        if status == "locked":
            raise NumberLocked(seconds_from_ms(int(LockedReply(*reply).retry_after_ms)))
        return reply

    async def spend_attempt(self, keys: ChallengeKeys, client: str) -> Reservation:
        """Count one attempt before the code is checked, and return the hash to check it against.

        Raises:
            ChallengeNotFound, ChallengeGone, TooManyAttempts, NumberLocked.
        """
        reservation_id = secrets.token_urlsafe(12)
        reply = await self._run(
            self._scripts.spend_attempt,
            [keys.challenge, keys.active, keys.guard, keys.inflight, keys.actives],
            [
                keys.random_part,
                client,
                reservation_id,
                *self._lockout_args,
                RESERVATION_LIFETIME_MS,
            ],
        )
        status = reply_text(reply[0])
        if status == "locked":
            raise NumberLocked(seconds_from_ms(int(LockedReply(*reply).retry_after_ms)))
        if status != "ok":
            _raise_for_status(status)
        reserved = ReservedReply(*reply)
        return Reservation(
            reservation_id=reservation_id,
            code_hash=CodeHash(
                pepper_id=reply_text(reserved.pepper_id),
                params=reply_text(reserved.params),
                digest=bytes(reserved.digest),
            ),
        )

    async def record_verdict(
        self, keys: ChallengeKeys, client: str, reservation: Reservation, *, matched: bool
    ) -> ApprovedChallenge:
        """Settle a reserved attempt: approve on a match (at most once), else count a failure.

        Raises:
            IncorrectCode: attempts remain.
            TooManyAttempts: that was the last attempt.
            NumberLocked: the number is locked now.
            ChallengeNotFound, ChallengeGone: the challenge ended meanwhile.
        """
        reply = await self._run(
            self._scripts.record_verdict,
            [keys.challenge, keys.active, keys.guard, keys.inflight, keys.actives],
            [
                keys.random_part,
                client,
                reservation.reservation_id,
                "1" if matched else "0",
                *self._lockout_args,
            ],
        )
        status = reply_text(reply[0])
        if status == "approved":
            approved = ApprovedReply(*reply)
            return ApprovedChallenge(
                challenge_id=keys.challenge_id,
                approved_at_ms=int(approved.approved_at_ms),
                where=Destination.parse(
                    reply_text(approved.where), source=reply_text(approved.source)
                ),
                created_at_ms=int(approved.created_at_ms or 0),
            )
        if status == "incorrect":
            incorrect = IncorrectReply(*reply)
            attempts_left, locked_ms = int(incorrect.attempts_left), int(incorrect.locked_ms)
            if locked_ms > 0:
                raise NumberLocked(seconds_from_ms(locked_ms))
            if attempts_left <= 0:
                raise TooManyAttempts("Incorrect code, and the attempt budget is now spent.")
            raise IncorrectCode(attempts_left)
        _raise_for_status(status)

    async def cancel(self, keys: ChallengeKeys, client: str) -> bool:
        """Cancel a pending challenge (idempotent); True when this call cancelled it.

        Raises:
            ChallengeNotFound, ChallengeGone: it is unknown, approved or expired.
        """
        reply = await self._run(
            self._scripts.cancel_challenge,
            [keys.challenge, keys.active, keys.actives],
            [keys.random_part, client],
        )
        status = reply_text(reply[0])
        if status != "cancelled":
            _raise_for_status(status)
        return len(reply) > 1

    async def confirm(self, keys: ChallengeKeys) -> bool:
        """Whether the challenge exists, proven to be on the replicas with
        ``redis.min_replicas_acked`` (a durable write that changes nothing)."""
        reply = await self._run(self._scripts.confirm_challenge, [keys.challenge], [])
        return int(reply[0]) == 1

    async def read(self, keys: ChallengeKeys, client: str) -> ChallengeView:
        """The challenge's public view.

        Raises:
            ChallengeNotFound: unknown, forgotten, or another client's.
        """
        reply = await self._run(
            self._scripts.read_challenge,
            [keys.challenge, keys.active, keys.actives],
            [keys.random_part, client],
        )
        status = reply_text(reply[0])
        if status == "missing":
            _raise_for_status(status)
        view = ViewReply(*reply)
        state, provider, message_id, detail, updated, sent = (
            reply_text(v)
            for v in (
                view.delivery_state,
                view.provider,
                view.message_id,
                view.detail,
                view.updated_at_ms,
                view.sent_at_ms,
            )
        )
        return ChallengeView(
            challenge_id=keys.challenge_id,
            status=ChallengeStatus(status),
            attempts_left=int(view.attempts_left),
            created_at_ms=int(view.created_at_ms),
            expires_at_ms=int(view.expires_at_ms),
            masked_phone=reply_text(view.masked_phone),
            purpose=reply_text(view.purpose),
            delivery=Delivery(
                status=DeliveryStatus(state or "queued"),
                provider=provider or None,
                message_id=message_id or None,
                detail=detail or None,
                updated_at_ms=int(updated) if updated else None,
                sent_at_ms=int(sent) if sent else None,
            ),
        )

    async def record_delivery(
        self,
        keys: ChallengeKeys,
        state: DeliveryStatus,
        *,
        send_id: str,
        report: DeliveryReport = NO_REPORT,
    ) -> DeliveryUpdate:
        """Move the challenge's delivery state forward; earlier states never replace later ones.

        ``SENDING`` is refused (outcome "ended") once the challenge can no longer be used.
        """
        reply = await self._run(
            self._scripts.record_delivery,
            [keys.challenge, keys.active, keys.optout, keys.actives],
            # Kept short: a hash value over 64 bytes would make Redis store the hash unpacked.
            [
                keys.random_part,
                state.value,
                send_id,
                report.provider,
                report.message_id[:64],
                report.detail[:60],
            ],
        )
        outcome = _delivery_outcome(reply_text(reply[0]))
        if outcome == "missing":
            return DeliveryUpdate(outcome=outcome)
        found = DeliveryReply(*reply)
        return DeliveryUpdate(
            outcome=outcome,
            previous=DeliveryStatus(reply_text(found.previous)),
            provider=reply_text(found.provider),
            send_id=reply_text(found.send_id),
            where=Destination.parse(reply_text(found.where)),
        )

    async def read_delivery(self, keys: ChallengeKeys) -> DeliveryUpdate:
        """The recorded delivery state, provider and send id (outcome "missing" if none)."""
        async with self._commands.command() as redis:
            fields = await redis.hmget(keys.challenge, ["st", "ds", "dp", "dsid"])
        exists, state, provider, send_id = (reply_text(v) if v is not None else "" for v in fields)
        if not exists:
            return DeliveryUpdate(outcome="missing")
        return DeliveryUpdate(
            outcome="ok",
            previous=DeliveryStatus(state or "queued"),
            provider=provider,
            send_id=send_id,
        )

    async def prepare(self) -> None:
        """Connect and load the scripts; raises ``StoreUnavailable`` when the store is down."""
        await self._scripts.preload()
        self._prepared = True

    async def check_ready(self) -> None:
        """Run a writing script on every primary; ``StoreUnavailable`` unless more than half of
        them took it. On one Redis that is the one; on a Cluster, a master failing over (its
        slots refused, the others' served) keeps the pod ready: taking every pod out of
        service then would refuse what the other masters can serve."""
        if not self._prepared:
            await self.prepare()
        keys = self._readiness_keys()
        outcomes = await asyncio.gather(
            *(self._run(self._scripts.check_ready, [key], []) for key in keys),
            return_exceptions=True,
        )
        failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        for failure in failures:
            if not isinstance(failure, StoreUnavailable):
                raise failure
        if 2 * len(failures) >= len(keys):
            raise failures[0]

    def _readiness_keys(self) -> list[str]:
        """One readiness key per primary: on a Cluster, a key in a slot each primary owns."""
        client = self._commands.client
        if not isinstance(client, RedisCluster):
            return [self._keys.readiness()]
        keys: dict[str, str] = {}
        primaries = {node.name for node in client.get_primaries()}
        for shard in range(READINESS_SHARD_SEARCH):
            key = self._keys.readiness(shard)
            node = client.get_node_from_key(key)
            if node is None:
                raise StoreUnavailable("a Redis Cluster slot has no node")
            keys.setdefault(node.name, key)
            if primaries <= keys.keys():
                break
        return list(keys.values())


_DELIVERY_OUTCOMES: frozenset[str] = frozenset(get_args(DeliveryOutcome))


def _delivery_outcome(text: str) -> DeliveryOutcome:
    """``record_delivery.lua``'s first reply value, checked against what it documents."""
    if text not in _DELIVERY_OUTCOMES:
        raise RuntimeError(f"record_delivery.lua answered {text!r}")
    return cast("DeliveryOutcome", text)
