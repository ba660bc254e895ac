"""FactorStore: the authenticator-app (TOTP) scripts' calls and the decoding of their replies.

Every script of a subject touches its keys only (``KeySpace.subject``: one slot). Checking a
code is two scripts, as for a challenge: a reservation before the code is compared (counted
against the subject's failure limit while in flight) and a verdict after, which approves only a
step later than the last one used.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, cast, get_args

from otpservice.errors import (
    CodeAlreadyUsed,
    FactorExists,
    FactorExpired,
    FactorNotFound,
    IncorrectCode,
    InvalidInput,
    RateLimited,
    SubjectLocked,
)
from otpservice.models import (
    FactorStatus,
    RecoveryHashes,
    SealedFactor,
    StoredFactor,
    TotpAlgorithm,
    TotpParams,
)
from otpservice.store.challenges import RESERVATION_LIFETIME_MS, seconds_from_ms
from otpservice.store.scripts import reply_text

if TYPE_CHECKING:
    from otpservice.config.schema import LockoutSettings
    from otpservice.store.keys import FactorRef, SubjectKeys
    from otpservice.store.scripts import StoreCommands

_MS = 1000
# Enrolments a subject may make in an hour (rule ``totp_enrol_per_subject``).
ENROLMENTS_PER_HOUR = 10
ENROL_RULE = "totp_enrol_per_subject"
RECOVERY_WINDOW_MS = 24 * 3600 * _MS
_ALGORITHMS: frozenset[str] = frozenset(get_args(TotpAlgorithm))
_FACTOR_FIELDS = ("id", "st", "lb", "cr", "ex", "lu", *(f"r{slot}" for slot in range(10)))


class EnrolledReply(NamedTuple):
    """``totp_enrol.lua``: {"ok", now ms, expires ms}."""

    status: bytes
    created_at_ms: int
    expires_at_ms: int


class WaitReply(NamedTuple):
    """{"blocked" | "rate_limited", retry-after ms}."""

    status: bytes
    retry_after_ms: int


class LockedReply(NamedTuple):
    """``totp_reserve.lua``, ``totp_activate_reserve.lua``: {"locked", retry-after ms, 1 when
    this call locked the subject again}."""

    status: bytes
    retry_after_ms: int
    relocked: int


class FormatReply(NamedTuple):
    """{"format", the factor's digits}: the code typed has another length (nothing spent)."""

    status: bytes
    digits: int


class ReservedReply(NamedTuple):
    """``totp_reserve.lua``: {"ok", now ms, random part, sealed secret, digits, period,
    algorithm, last step}."""

    status: bytes
    now_ms: int
    random_part: bytes
    sealed_secret: bytes
    digits: bytes
    period: bytes
    algorithm: bytes
    last_step: bytes


class FailedReply(NamedTuple):
    """{"incorrect" | "replayed" | "current_*", failures left, locked ms (0: not locked), ms
    this failure locked the subject for (0: it did not)}."""

    status: bytes
    left: int
    locked_ms: int
    locked_now_ms: int


class RecoveryFailedReply(NamedTuple):
    """``totp_recovery.lua``: {"incorrect", recovery failures left, ms recovery stays blocked,
    ms this failure locked the subject for (0: it did not)}."""

    status: bytes
    left: int
    blocked_ms: int
    locked_ms: int


class ApprovedReply(NamedTuple):
    """``totp_verdict.lua``, ``totp_activate.lua``: {"approved" | "activated", ms}."""

    status: bytes
    at_ms: int


class ActivationReply(NamedTuple):
    """``totp_activate_reserve.lua``: {"ok", now ms, the pending factor's sealed secret,
    digits, period, algorithm, then the active factor's random part, sealed secret, digits,
    period, algorithm, last step ("" parts: none)}."""

    status: bytes
    now_ms: int
    sealed_secret: bytes
    digits: bytes
    period: bytes
    algorithm: bytes
    active_random_part: bytes
    active_sealed_secret: bytes
    active_digits: bytes
    active_period: bytes
    active_algorithm: bytes
    active_last_step: bytes


class AttemptsReply(NamedTuple):
    """``totp_activate.lua``: {"incorrect", activation attempts left}."""

    status: bytes
    attempts_left: int


class RecoveryReservedReply(NamedTuple):
    """``totp_recovery_reserve.lua``: {"ok", now ms, random part, the slot's hash, recovery
    key id, argon2 parameters}."""

    status: bytes
    now_ms: int
    random_part: bytes
    digest: bytes
    key_id: bytes
    params: bytes


class RecoveredReply(NamedTuple):
    """``totp_recovery.lua``: {"approved", ms, recovery codes left}."""

    status: bytes
    approved_at_ms: int
    codes_left: int


class RemovedReply(NamedTuple):
    """``totp_remove.lua``: {"removed", "active" | "pending", the factor's client}."""

    status: bytes
    was: bytes
    client: bytes


@dataclass(frozen=True, slots=True)
class ReservedCheck:
    """A code check reserved against the subject's budget: the factor to check it with and
    the store's clock (what the steps are computed from)."""

    reservation_id: str
    now_ms: int
    factor: SealedFactor


@dataclass(frozen=True, slots=True)
class ReservedActivation:
    """An activation attempt spent: the pending factor, and the active one the current code
    must match (None when the subject has none)."""

    reservation_id: str
    now_ms: int
    pending: SealedFactor
    active: SealedFactor | None


@dataclass(frozen=True, slots=True)
class ReservedRecovery:
    """A recovery-code check reserved: the slot's stored hash (None: used or unknown)."""

    reservation_id: str
    now_ms: int
    random_part: str
    stored: RecoveryHashes | None


@dataclass(frozen=True, slots=True)
class Recovered:
    """A recovery code used up: when, and how many of the set are left."""

    approved_at_ms: int
    codes_left: int


@dataclass(frozen=True, slots=True)
class RecoveryRefused:
    """A wrong (or used, or replaced) recovery code, counted: wrong recovery codes left, for
    how long recovery is blocked, and for how long this failure locked the subject (0: not)."""

    recovery_failures_left: int
    blocked_ms: int
    locked_ms: int


@dataclass(frozen=True, slots=True)
class ActiveFactor:
    """An active factor as sealed: what regenerating its recovery codes reads."""

    sealed_secret: str
    sealed_label: str
    sealed_subject: str


def _params(digits: bytes | str, period: bytes | str, algorithm: bytes | str) -> TotpParams:
    algorithm_text = reply_text(algorithm)
    if algorithm_text not in _ALGORITHMS or reply_text(digits) not in ("6", "8"):
        raise RuntimeError("a stored factor has parameters no release wrote")
    return TotpParams(
        digits=6 if reply_text(digits) == "6" else 8,
        period_seconds=int(reply_text(period)),
        algorithm=cast("TotpAlgorithm", algorithm_text),
    )


def _format_error(reply: list[Any]) -> InvalidInput:
    digits = int(FormatReply(*reply).digits)
    return InvalidInput(f"code must be exactly {digits} ASCII digits", code="invalid_code_format")


def _locked(reply: list[Any]) -> SubjectLocked:
    locked = LockedReply(*reply)
    return SubjectLocked(
        seconds_from_ms(int(locked.retry_after_ms)), just_locked=int(locked.relocked) == 1
    )


def _failure(reply: list[Any]) -> Exception:
    """The error of a settled failure: locked, a replay, or a wrong code."""
    failed = FailedReply(*reply)
    status, left, locked_ms = reply_text(failed.status), int(failed.left), int(failed.locked_ms)
    if locked_ms > 0:
        return SubjectLocked(seconds_from_ms(locked_ms), just_locked=int(failed.locked_now_ms) > 0)
    if status.endswith("replayed"):
        return CodeAlreadyUsed(left)
    return IncorrectCode(left)


class FactorStore:
    """Enrols, checks, activates, lists and removes factors, one atomic script each."""

    def __init__(self, commands: StoreCommands, lockout: LockoutSettings, *, attempts: int) -> None:
        self._commands = commands
        self._run = commands.run_script
        self._scripts = commands.scripts
        self._activation_attempts = attempts
        self._lockout_args = [
            lockout.max_failures,
            lockout.base_seconds * _MS,
            lockout.max_seconds * _MS,
            lockout.memory_seconds * _MS,
        ]

    async def enrol(
        self,
        ref: FactorRef,
        *,
        client: str,
        sealed_secret: str,
        sealed_label: str,
        sealed_subject: str,
        params: TotpParams,
        pending_ttl_seconds: int,
    ) -> tuple[int, int]:
        """Store a pending factor in place of the subject's pending one; (created, expires) ms.

        Raises:
            RateLimited: ``totp_enrol_per_subject``; nothing was stored.
        """
        keys = ref.keys
        reply = await self._run(
            self._scripts.totp_enrol,
            [keys.pending, keys.enrolments],
            [
                ref.random_part,
                client,
                sealed_secret,
                sealed_label,
                params.digits,
                params.period_seconds,
                params.algorithm,
                pending_ttl_seconds * _MS,
                self._activation_attempts,
                ENROLMENTS_PER_HOUR,
                sealed_subject,
            ],
        )
        if reply_text(reply[0]) == "rate_limited":
            wait = WaitReply(*reply)
            raise RateLimited(ENROL_RULE, seconds_from_ms(int(wait.retry_after_ms)))
        enrolled = EnrolledReply(*reply)
        return int(enrolled.created_at_ms), int(enrolled.expires_at_ms)

    async def reserve(self, keys: SubjectKeys, client: str, typed_digits: int) -> ReservedCheck:
        """Reserve a check of a code against the subject's active factor.

        Raises:
            FactorNotFound, SubjectLocked; InvalidInput (``invalid_code_format``, nothing spent).
        """
        reservation_id = secrets.token_urlsafe(12)
        reply = await self._run(
            self._scripts.totp_reserve,
            [keys.active, keys.guard, keys.inflight],
            [client, reservation_id, typed_digits, *self._lockout_args, RESERVATION_LIFETIME_MS],
        )
        status = reply_text(reply[0])
        if status == "missing":
            raise FactorNotFound("the subject has no active authenticator-app factor")
        if status == "format":
            raise _format_error(reply)
        if status == "locked":
            raise _locked(reply)
        reserved = ReservedReply(*reply)
        return ReservedCheck(
            reservation_id=reservation_id,
            now_ms=int(reserved.now_ms),
            factor=SealedFactor(
                random_part=reply_text(reserved.random_part),
                sealed_secret=reply_text(reserved.sealed_secret),
                params=_params(reserved.digits, reserved.period, reserved.algorithm),
                last_step=int(reply_text(reserved.last_step)),
            ),
        )

    async def settle(
        self, keys: SubjectKeys, client: str, reserved: ReservedCheck, step: int | None
    ) -> int:
        """Settle a reserved check (``step``: the highest that matched); the approval's ms.

        Raises:
            IncorrectCode, CodeAlreadyUsed (a replay), SubjectLocked, FactorNotFound.
        """
        reply = await self._verdict(keys, client, reserved, "" if step is None else str(step))
        status = reply_text(reply[0])
        if status == "approved":
            return int(ApprovedReply(*reply).at_ms)
        if status == "missing":
            raise FactorNotFound("the factor was removed or replaced meanwhile")
        raise _failure(reply)

    async def release(self, keys: SubjectKeys, client: str, reserved: ReservedCheck) -> None:
        """Drop a reserved check uncounted: its code could not be checked at all."""
        await self._verdict(keys, client, reserved, "void")

    async def _verdict(
        self, keys: SubjectKeys, client: str, reserved: ReservedCheck, step: str
    ) -> list[Any]:
        return await self._run(
            self._scripts.totp_verdict,
            [keys.active, keys.guard, keys.inflight],
            [
                client,
                reserved.reservation_id,
                reserved.factor.random_part,
                step,
                *self._lockout_args,
            ],
        )

    async def reserve_activation(
        self, ref: FactorRef, client: str, typed_digits: int, current_digits: int
    ) -> ReservedActivation:
        """Spend an activation attempt (and reserve the current code's check, when the subject
        has an active factor).

        Raises:
            FactorNotFound, FactorExpired, FactorExists, SubjectLocked, InvalidInput.
        """
        keys = ref.keys
        reservation_id = secrets.token_urlsafe(12)
        reply = await self._run(
            self._scripts.totp_activate_reserve,
            [keys.pending, keys.active, keys.guard, keys.inflight],
            [
                client,
                ref.random_part,
                reservation_id,
                typed_digits,
                current_digits,
                *self._lockout_args,
                RESERVATION_LIFETIME_MS,
            ],
        )
        status = reply_text(reply[0])
        if status == "missing":
            raise FactorNotFound("no such factor")
        if status == "active":
            raise FactorExists("this factor is active already")
        if status == "expired":
            raise FactorExpired("the factor's activation time or attempts ran out; enrol again")
        if status == "exists":
            raise FactorExists(
                "the subject has an active factor: send current_code, a code of it, to replace it"
            )
        if status == "format":
            raise _format_error(reply)
        if status == "locked":
            raise _locked(reply)
        found = ActivationReply(*reply)
        active_part = reply_text(found.active_random_part)
        return ReservedActivation(
            reservation_id=reservation_id,
            now_ms=int(found.now_ms),
            pending=SealedFactor(
                random_part=ref.random_part,
                sealed_secret=reply_text(found.sealed_secret),
                params=_params(found.digits, found.period, found.algorithm),
            ),
            active=SealedFactor(
                random_part=active_part,
                sealed_secret=reply_text(found.active_sealed_secret),
                params=_params(found.active_digits, found.active_period, found.active_algorithm),
                last_step=int(reply_text(found.active_last_step)),
            )
            if active_part
            else None,
        )

    async def activate(
        self,
        ref: FactorRef,
        client: str,
        reserved: ReservedActivation,
        *,
        step: int | None,
        current_step: int | None,
        recovery: RecoveryHashes | None,
    ) -> int:
        """Settle an activation: the pending factor becomes the active one (replacing the one
        the current code proved); the activation's ms.

        Raises:
            IncorrectCode, FactorExpired (the last attempt failed), CodeAlreadyUsed,
            SubjectLocked, FactorExists, FactorNotFound.
        """
        keys = ref.keys
        digests = recovery.digests if recovery is not None else [b""] * 10
        reply = await self._run(
            self._scripts.totp_activate,
            [keys.pending, keys.active, keys.guard, keys.inflight],
            [
                client,
                ref.random_part,
                reserved.reservation_id,
                "" if step is None or recovery is None else step,
                reserved.active.random_part if reserved.active is not None else "",
                "" if current_step is None else current_step,
                *self._lockout_args,
                recovery.key_id if recovery is not None else "",
                recovery.params if recovery is not None else "",
                *digests,
            ],
        )
        status = reply_text(reply[0])
        if status == "activated":
            return int(ApprovedReply(*reply).at_ms)
        if status == "missing":
            raise FactorNotFound("the factor was removed or replaced meanwhile")
        if status == "exists":
            raise FactorExists("the subject's active factor changed meanwhile; try again")
        if status == "incorrect":
            left = int(AttemptsReply(*reply).attempts_left)
            if left <= 0:
                raise FactorExpired("incorrect code, and the activation attempts are spent")
            raise IncorrectCode(left)
        raise _failure(reply)

    async def reserve_recovery(
        self, keys: SubjectKeys, client: str, slot: int, *, max_failures: int
    ) -> ReservedRecovery:
        """Reserve a recovery-code check of ``slot``.

        Raises:
            FactorNotFound; SubjectLocked when recovery is blocked for wrong recovery codes.
        """
        reservation_id = secrets.token_urlsafe(12)
        reply = await self._run(
            self._scripts.totp_recovery_reserve,
            [keys.active, keys.guard, keys.inflight, keys.recovery_inflight],
            [
                client,
                reservation_id,
                slot,
                max_failures,
                RECOVERY_WINDOW_MS,
                *self._lockout_args,
                RESERVATION_LIFETIME_MS,
            ],
        )
        status = reply_text(reply[0])
        if status == "missing":
            raise FactorNotFound("the subject has no active authenticator-app factor")
        if status == "blocked":
            raise SubjectLocked.recovery_blocked(
                seconds_from_ms(int(WaitReply(*reply).retry_after_ms))
            )
        found = RecoveryReservedReply(*reply)
        digest = bytes(found.digest)
        return ReservedRecovery(
            reservation_id=reservation_id,
            now_ms=int(found.now_ms),
            random_part=reply_text(found.random_part),
            stored=RecoveryHashes(
                key_id=reply_text(found.key_id),
                params=reply_text(found.params),
                digests=[digest],
            )
            if digest
            else None,
        )

    async def settle_recovery(
        self,
        keys: SubjectKeys,
        client: str,
        reserved: ReservedRecovery,
        slot: int,
        *,
        matched: bool,
        max_failures: int,
    ) -> Recovered | RecoveryRefused:
        """Use the slot's code up on a match (once, and only if the set was not replaced
        meanwhile), else count a failure of both budgets.

        Raises:
            FactorNotFound.
        """
        checked = reserved.stored.digests[0] if reserved.stored is not None else b""
        reply = await self._run(
            self._scripts.totp_recovery,
            [keys.active, keys.guard, keys.inflight, keys.recovery_inflight],
            [
                client,
                reserved.reservation_id,
                reserved.random_part,
                slot,
                "1" if matched else "0",
                max_failures,
                RECOVERY_WINDOW_MS,
                *self._lockout_args,
                checked,
            ],
        )
        status = reply_text(reply[0])
        if status == "approved":
            recovered = RecoveredReply(*reply)
            return Recovered(int(recovered.approved_at_ms), int(recovered.codes_left))
        if status == "missing":
            raise FactorNotFound("the factor was removed or replaced meanwhile")
        failed = RecoveryFailedReply(*reply)
        return RecoveryRefused(
            recovery_failures_left=int(failed.left),
            blocked_ms=int(failed.blocked_ms),
            locked_ms=int(failed.locked_ms),
        )

    async def replace_recovery_codes(
        self,
        ref: FactorRef,
        client: str,
        recovery: RecoveryHashes,
        resealed: ActiveFactor | None = None,
    ) -> None:
        """Put a new set of recovery codes in place of the old (and, ``resealed``, the secret,
        label and subject sealed anew).

        Raises:
            FactorNotFound: no such active factor.
        """
        reply = await self._run(
            self._scripts.totp_recovery_codes,
            [ref.keys.active],
            [
                client,
                ref.random_part,
                *(
                    (resealed.sealed_secret, resealed.sealed_label, resealed.sealed_subject)
                    if resealed is not None
                    else ("", "", "")
                ),
                recovery.key_id,
                recovery.params,
                *recovery.digests,
            ],
        )
        if reply_text(reply[0]) == "missing":
            raise FactorNotFound("no such active factor")

    async def active_factor(self, ref: FactorRef, client: str) -> ActiveFactor | None:
        """The active factor ``ref`` names, sealed (None: not the client's active factor)."""
        async with self._commands.command() as redis:
            fields = await redis.hmget(ref.keys.active, ["id", "cl", "sk", "lb", "sb"])
        found = [reply_text(v) if v is not None else "" for v in fields]
        if found[0] != ref.random_part or found[1] != client:
            return None
        return ActiveFactor(sealed_secret=found[2], sealed_label=found[3], sealed_subject=found[4])

    async def sealed_subject(self, keys: SubjectKeys) -> str:
        """The subject of these keys, as sealed beside its factors ("" when it has none)."""
        async with self._commands.command() as redis:
            found = [await redis.hget(key, "sb") for key in (keys.active, keys.pending)]
        return next((reply_text(value) for value in found if value), "")

    async def remove(self, ref: FactorRef, client: str | None) -> tuple[FactorStatus, str]:
        """Remove the factor (``client`` None: any client's, for an operator); what it was
        and whose.

        Raises:
            FactorNotFound.
        """
        reply = await self._run(
            self._scripts.totp_remove,
            [ref.keys.active, ref.keys.pending],
            [client or "", ref.random_part],
        )
        if reply_text(reply[0]) == "missing":
            raise FactorNotFound("no such factor")
        removed = RemovedReply(*reply)
        status: FactorStatus = "active" if reply_text(removed.was) == "active" else "pending"
        return status, reply_text(removed.client)

    async def read(self, keys: SubjectKeys, now_ms: int) -> list[StoredFactor]:
        """The subject's factors: the active one, then a pending one that has not expired."""
        replies = await self._commands.pipeline(
            keys.active,
            [("HMGET", key, *_FACTOR_FIELDS) for key in (keys.active, keys.pending)],
        )
        found: list[StoredFactor] = []
        for reply in replies:
            if isinstance(reply, BaseException):
                raise reply
            # The recovery-code hashes are raw bytes: only whether each is there is read.
            text_count = len(_FACTOR_FIELDS) - 10
            values = [reply_text(v) if v is not None else "" for v in reply[:text_count]]
            fields = dict(zip(_FACTOR_FIELDS[:text_count], values, strict=True))
            codes_left = sum(1 for v in reply[text_count:] if v)
            expires = int(fields["ex"]) if fields["ex"] else None
            if not fields["id"] or (expires is not None and expires <= now_ms):
                continue
            found.append(
                StoredFactor(
                    random_part=fields["id"],
                    status="active" if fields["st"] == "a" else "pending",
                    sealed_label=fields["lb"],
                    created_at_ms=int(fields["cr"]),
                    expires_at_ms=expires,
                    last_used_at_ms=int(fields["lu"]) if fields["lu"] else None,
                    recovery_codes_left=codes_left,
                )
            )
        return found

    async def erase(self, keys: SubjectKeys) -> int:
        """Delete every key of the subject; how many went."""
        return await self._commands.erase("del", list(keys.all))
