"""TotpFactors: authenticator-app factors (TOTP) and recovery codes, beside SMS.

A login app knows its users by its own id, a *subject*; each (client, subject) has at most one
active and one pending factor. A factor's secret and label are sealed at rest (``TotpKeys``);
the secret leaves the service once, in the enrolment answer (the ``otpauth://`` URI and its QR
code), and recovery codes once, when made. Checking a code reserves it against the subject's
failure budget first, computes every step of the window in constant time, and lets the store
approve only a step later than the last one used, so one code logs in once.

Plain async Python: no web framework, no Redis commands (those live in ``store/``).
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import segno

from otpservice.crypto.sealing import SealError
from otpservice.crypto.totp import (
    RECOVERY_CODES,
    matching_step,
    new_recovery_code,
    new_secret,
    otpauth_uri,
    read_recovery_code,
    shown_recovery_code,
)
from otpservice.errors import (
    FactorExpired,
    FactorNotFound,
    IncorrectCode,
    InvalidInput,
    OtpError,
    SubjectLocked,
    TotpNotConfigured,
)
from otpservice.models import RecoveryHashes, TotpParams, ceil_seconds
from otpservice.store.factors import ActiveFactor, RecoveryRefused

if TYPE_CHECKING:
    from collections.abc import Callable

    from otpservice.config.live import LiveSettings
    from otpservice.crypto.codes import CodeHasher
    from otpservice.crypto.totp import SealedKind, TotpKeys
    from otpservice.models import FactorStatus, SealedFactor
    from otpservice.store.factors import FactorStore
    from otpservice.store.keys import FactorRef, KeySpace
    from otpservice.usecases.abuse import AbusePolicy
    from otpservice.usecases.analytics import Analytics
    from otpservice.usecases.events import AppEvents

log = logging.getLogger("otpservice.totp")

# The app's own id of a user: printable ASCII without spaces (never a phone number or email).
SUBJECT_PATTERN = r"^[!-~]{1,128}$"
_SUBJECT = re.compile(r"[!-~]{1,128}")
LABEL_MAX = 64


@dataclass(frozen=True, slots=True)
class Enrolment:
    """A pending factor, with what the authenticator app scans (shown this once)."""

    factor_id: str
    otpauth_uri: str
    qr_svg: str
    expires_at_ms: int


@dataclass(frozen=True, slots=True)
class Activation:
    """An active factor and its recovery codes (shown this once)."""

    factor_id: str
    recovery_codes: list[str]


@dataclass(frozen=True, slots=True)
class TotpApproval:
    """A code approved: whose, with which factor, when."""

    factor_id: str
    subject: str
    approved_at_ms: int


@dataclass(frozen=True, slots=True)
class RecoveryApproval:
    """A recovery code used up."""

    factor_id: str
    recovery_codes_left: int
    approved_at_ms: int


@dataclass(frozen=True, slots=True)
class FactorView:
    """A factor as listed (its label opened)."""

    factor_id: str
    status: FactorStatus
    label: str
    created_at_ms: int
    last_used_at_ms: int | None
    recovery_codes_left: int


def check_subject(subject: str) -> None:
    """Refuse what is not a subject: ``[!-~]{1,128}``.

    Raises:
        InvalidInput: ``invalid_subject``.
    """
    if _SUBJECT.fullmatch(subject) is None:
        raise InvalidInput(
            "subject must be 1 to 128 printable ASCII characters without spaces: the app's "
            "own user id, never a phone number or an email address",
            code="invalid_subject",
        )


def _check_label(label: str) -> None:
    if not 1 <= len(label) <= LABEL_MAX or not label.isprintable() or ":" in label:
        raise InvalidInput(
            f"label must be 1 to {LABEL_MAX} printable characters without ':'",
            code="invalid_label",
        )


def _check_code(code: str) -> None:
    """A TOTP code's form (6 or 8 ASCII digits); the factor's own digits are checked by the
    store, before anything is spent."""
    if len(code) not in (6, 8) or not code.isascii() or not code.isdigit():
        raise InvalidInput("code must be 6 or 8 ASCII digits", code="invalid_code_format")


def qr_svg(uri: str) -> str:
    """A standalone SVG (XML declaration and namespace: a saved file opens as an image) of
    the QR code of ``uri``."""
    out = io.BytesIO()
    segno.make(uri, error="m", micro=False).save(out, kind="svg", scale=4, border=4)
    return out.getvalue().decode()


class TotpFactors:
    """Enrols, activates, checks, lists and removes authenticator-app factors."""

    def __init__(
        self,
        live: LiveSettings,
        *,
        store: FactorStore,
        keys: KeySpace,
        totp_keys: TotpKeys | None,
        hasher: CodeHasher,
        abuse: AbusePolicy,
        events: AppEvents,
        analytics: Analytics,
        clock: Callable[[float], float] | None = None,
    ) -> None:
        """``clock`` maps the store's time (seconds) to the time codes are computed for: the
        tests' seam; by default the store's time itself."""
        self._live = live
        self._store = store
        self._keys = keys
        self._totp_keys = totp_keys
        self._hasher = hasher
        self._abuse = abuse
        self._events = events
        self._analytics = analytics
        self.clock: Callable[[float], float] = clock or (lambda store_now: store_now)

    def _sealing(self) -> TotpKeys:
        if self._totp_keys is None:
            raise TotpNotConfigured(
                "authenticator apps need secrets.totp_key (32 random bytes, base64: "
                "otpservice secrets generate writes one)"
            )
        return self._totp_keys

    def _ref(self, factor_id: str) -> FactorRef:
        ref = self._keys.for_factor(factor_id)
        if ref is None or ref.forged:
            raise FactorNotFound("no such factor")
        return ref

    async def enrol(self, subject: str, label: str, *, client: str) -> Enrolment:
        """A new pending factor for ``subject``, replacing its pending one.

        Raises:
            InvalidInput (``invalid_subject``, ``invalid_label``), RateLimited, TotpNotConfigured.
        """
        check_subject(subject)
        _check_label(label)
        totp_keys = self._sealing()
        settings = self._live.current
        params = TotpParams(
            digits=settings.totp.digits,
            period_seconds=settings.totp.period_seconds,
            algorithm=settings.totp.algorithm,
        )
        admission = await self._abuse.admit_client(client)
        ref = self._keys.new_factor(self._keys.subject(client, subject))
        secret = new_secret(params)
        try:
            _, expires_at_ms = await self._store.enrol(
                ref,
                client=client,
                sealed_secret=totp_keys.seal("secret", secret, ref.factor_id),
                sealed_label=totp_keys.seal("label", label.encode(), ref.factor_id),
                sealed_subject=totp_keys.seal("subject", subject.encode(), ref.keys.tag),
                params=params,
                pending_ttl_seconds=settings.totp.pending_ttl_seconds,
            )
        except BaseException:
            await self._abuse.give_back(admission)
            raise
        self._analytics.count("totp_enrolled")
        log.info("factor %s enrolled (pending)", ref.factor_id)
        uri = otpauth_uri(secret, params, issuer=settings.totp_issuer, label=label)
        return Enrolment(
            factor_id=ref.factor_id,
            otpauth_uri=uri,
            qr_svg=qr_svg(uri),
            expires_at_ms=expires_at_ms,
        )

    async def activate(
        self, factor_id: str, code: str, *, client: str, current_code: str | None = None
    ) -> Activation:
        """Activate a pending factor with its first valid code, replacing the active one when
        ``current_code`` (a valid code of it) comes along; the new recovery codes.

        Raises:
            InvalidInput, IncorrectCode, CodeAlreadyUsed, SubjectLocked, FactorNotFound,
            FactorExists, FactorExpired, TotpNotConfigured.
        """
        totp_keys = self._sealing()
        _check_code(code)
        if current_code is not None:
            _check_code(current_code)
        ref = self._ref(factor_id)
        window = self._live.current.totp.window
        with self._hasher.admit():
            try:
                reserved = await self._store.reserve_activation(
                    ref, client, len(code), len(current_code or "")
                )
            except SubjectLocked as exc:
                await self._locked(client, exc, subject=await self._subject_of(totp_keys, ref))
                raise
            now_s = self.clock(reserved.now_ms / 1000)
            pending = reserved.pending
            secret = self._secret(totp_keys, pending, ref.factor_id)
            step = _match(secret, pending.params, code, now_s, window)
            active = reserved.active
            current_step = None
            if active is not None and current_code is not None:
                active_id = self._keys.factor_id(ref.keys, active.random_part)
                secret = self._secret(totp_keys, active, active_id)
                current_step = _match(secret, active.params, current_code, now_s, window)
            swap_proven = active is None or (
                current_step is not None and current_step > active.last_step
            )
            codes: list[str] = []
            recovery = None
            if step is not None and swap_proven:
                codes, recovery = await self._new_recovery_codes(totp_keys, ref.factor_id)
            try:
                await self._store.activate(
                    ref,
                    client,
                    reserved,
                    step=step,
                    current_step=current_step,
                    recovery=recovery,
                )
            except SubjectLocked as exc:
                subject = await self._subject_of(totp_keys, ref)
                await self._locked(client, exc, subject=subject)
                raise
        subject = await self._subject_of(totp_keys, ref)
        if active is not None:
            removed_id = self._keys.factor_id(ref.keys, active.random_part)
            log.info("factor %s replaced by %s", removed_id, factor_id)
            await self._events.factor_changed(
                "totp.removed", removed_id, subject=subject, client=client
            )
        await self._events.factor_changed(
            "totp.activated", factor_id, subject=subject, client=client
        )
        self._analytics.count("totp_activated")
        log.info("factor %s activated", factor_id)
        return Activation(factor_id=factor_id, recovery_codes=codes)

    async def verify(self, subject: str, code: str, *, client: str) -> TotpApproval:
        """Approve ``code`` for the subject's active factor: once per step, later steps only.

        Raises:
            InvalidInput, IncorrectCode, CodeAlreadyUsed, SubjectLocked, FactorNotFound,
            TotpNotConfigured.
        """
        check_subject(subject)
        _check_code(code)
        totp_keys = self._sealing()
        keys = self._keys.subject(client, subject)
        try:
            reserved = await self._store.reserve(keys, client, len(code))
        except SubjectLocked as exc:
            await self._locked(client, exc, subject=subject)
            raise
        factor_id = self._keys.factor_id(keys, reserved.factor.random_part)
        secret = self._secret(totp_keys, reserved.factor, factor_id)
        if secret is None:
            # Its key was retired before the factor moved: no code of it can be checked, and
            # none is counted against the user.
            await self._store.release(keys, client, reserved)
            raise FactorExpired(
                "this factor's TOTP key was retired (secrets.previous_totp_key); enrol again"
            )
        now_s = self.clock(reserved.now_ms / 1000)
        window = self._live.current.totp.window
        step = _match(secret, reserved.factor.params, code, now_s, window)
        try:
            approved_at_ms = await self._store.settle(keys, client, reserved, step)
        except SubjectLocked as exc:
            self._analytics.count("totp_failed")
            await self._locked(client, exc, subject=subject)
            raise
        except OtpError as exc:
            if not isinstance(exc, FactorNotFound):
                self._analytics.count("totp_failed")
            log.info("factor %s: code refused (%s)", factor_id, exc.code)
            raise
        self._analytics.count("totp_verified")
        log.info("factor %s: code approved", factor_id)
        return TotpApproval(factor_id=factor_id, subject=subject, approved_at_ms=approved_at_ms)

    async def recover(self, subject: str, code: str, *, client: str) -> RecoveryApproval:
        """Use one of the subject's recovery codes up (also while it is locked for TOTP codes).

        Raises:
            InvalidInput, IncorrectCode, SubjectLocked (recovery blocked), FactorNotFound,
            TotpNotConfigured.
        """
        check_subject(subject)
        read = read_recovery_code(code)
        if read is None:
            raise InvalidInput(
                "a recovery code is a slot digit and ten letters or digits (N-XXXXX-XXXXX)",
                code="invalid_code_format",
            )
        slot, typed = read
        totp_keys = self._sealing()
        keys = self._keys.subject(client, subject)
        max_failures = self._live.current.totp.recovery_max_failures
        with self._hasher.admit():
            reserved = await self._store.reserve_recovery(
                keys, client, slot, max_failures=max_failures
            )
            factor_id = self._keys.factor_id(keys, reserved.random_part)
            stored = reserved.stored
            mac = (
                totp_keys.recovery_mac(stored.key_id, factor_id, slot, typed)
                if stored is not None
                else None
            )
            if stored is None or mac is None:
                # A used or unknown slot (or a retired key) costs what a check does.
                await self._hasher.waste_time()
                matched = False
            else:
                matched = await self._hasher.check_keyed(mac, stored.params, stored.digests[0])
        outcome = await self._store.settle_recovery(
            keys, client, reserved, slot, matched=matched, max_failures=max_failures
        )
        if isinstance(outcome, RecoveryRefused):
            self._analytics.count("recovery_failed")
            log.info("factor %s: recovery code refused", factor_id)
            if outcome.locked_ms > 0:
                locked = SubjectLocked(ceil_seconds(outcome.locked_ms), just_locked=True)
                await self._locked(client, locked, subject=subject)
            if outcome.blocked_ms > 0:
                raise SubjectLocked.recovery_blocked(max(1, ceil_seconds(outcome.blocked_ms)))
            raise IncorrectCode(outcome.recovery_failures_left)
        recovered = outcome
        self._analytics.count("recovery_used")
        log.warning("factor %s: recovery code used, %d left", factor_id, recovered.codes_left)
        await self._events.recovery_used(
            factor_id,
            subject=subject,
            client=client,
            codes_left=recovered.codes_left,
            at_ms=recovered.approved_at_ms,
        )
        return RecoveryApproval(
            factor_id=factor_id,
            recovery_codes_left=recovered.codes_left,
            approved_at_ms=recovered.approved_at_ms,
        )

    async def regenerate_recovery_codes(self, factor_id: str, *, client: str) -> list[str]:
        """A new set of recovery codes for an active factor (the old set stops working); its
        secret, label and subject are sealed anew under the current TOTP key if an older key
        sealed them.

        Raises:
            FactorNotFound, FactorExpired (its key is gone), TotpNotConfigured.
        """
        totp_keys = self._sealing()
        ref = self._ref(factor_id)
        sealed = await self._store.active_factor(ref, client)
        if sealed is None:
            raise FactorNotFound("no such active factor")
        resealed = None
        if not totp_keys.sealed_with_current(sealed.sealed_secret):
            resealed = self._resealed(totp_keys, sealed, ref)
        with self._hasher.admit():
            codes, recovery = await self._new_recovery_codes(totp_keys, factor_id)
        await self._store.replace_recovery_codes(ref, client, recovery, resealed)
        log.info("factor %s: recovery codes regenerated", factor_id)
        return codes

    def _resealed(self, totp_keys: TotpKeys, sealed: ActiveFactor, ref: FactorRef) -> ActiveFactor:
        """The factor's secret, label and subject sealed under the current TOTP key.

        Raises:
            FactorExpired: the secret's key is gone; the user must enrol again.
        """
        try:
            secret = totp_keys.open("secret", sealed.sealed_secret, ref.factor_id)
        except SealError:
            raise FactorExpired(
                "the factor's TOTP key was retired (secrets.previous_totp_key); enrol again"
            ) from None

        def again(kind: SealedKind, text: str, bound_to: str) -> str:
            try:
                return totp_keys.seal(kind, totp_keys.open(kind, text, bound_to), bound_to)
            except SealError:
                return ""  # kept as it is: nothing better to put there

        return ActiveFactor(
            sealed_secret=totp_keys.seal("secret", secret, ref.factor_id),
            sealed_label=again("label", sealed.sealed_label, ref.factor_id),
            sealed_subject=again("subject", sealed.sealed_subject, ref.keys.tag),
        )

    async def list_factors(self, subject: str, *, client: str) -> list[FactorView]:
        """The subject's factors: the active one and a pending one.

        Raises:
            InvalidInput (``invalid_subject``), TotpNotConfigured.
        """
        check_subject(subject)
        totp_keys = self._sealing()
        keys = self._keys.subject(client, subject)
        views = []
        for stored in await self._store.read(keys, int(time.time() * 1000)):
            factor_id = self._keys.factor_id(keys, stored.random_part)
            try:
                label = totp_keys.open("label", stored.sealed_label, factor_id).decode()
            except SealError:
                label = ""  # sealed under a retired key: regenerating reseals the secret only
            views.append(
                FactorView(
                    factor_id=factor_id,
                    status=stored.status,
                    label=label,
                    created_at_ms=stored.created_at_ms,
                    last_used_at_ms=stored.last_used_at_ms,
                    recovery_codes_left=stored.recovery_codes_left,
                )
            )
        return views

    async def remove(self, factor_id: str, *, client: str | None) -> str:
        """Remove a factor, active or pending (``client`` None: an operator, any client's);
        the client it belonged to.

        Raises:
            FactorNotFound, TotpNotConfigured.
        """
        totp_keys = self._sealing()
        ref = self._ref(factor_id)
        subject = await self._subject_of(totp_keys, ref)
        status, owner = await self._store.remove(ref, client)
        log.info("factor %s removed (%s)", factor_id, status)
        if status == "active":
            await self._events.factor_changed(
                "totp.removed", factor_id, subject=subject, client=owner
            )
        return owner

    async def _subject_of(self, totp_keys: TotpKeys, ref: FactorRef) -> str:
        """The subject a factor belongs to (sealed beside it; "" if it does not open)."""
        sealed = await self._store.sealed_subject(ref.keys)
        try:
            return totp_keys.open("subject", sealed, ref.keys.tag).decode() if sealed else ""
        except SealError:
            return ""

    async def _locked(self, client: str, exc: SubjectLocked, *, subject: str) -> None:
        """The event and the log line of a lockout, once: from the request that locked it."""
        if not exc.just_locked:
            return
        locked_for = exc.retry_after_seconds or 0
        log.warning("a subject of client %s locked for %s s", client, locked_for)
        await self._events.subject_locked(subject, client=client, locked_for_seconds=locked_for)

    def _secret(self, totp_keys: TotpKeys, factor: SealedFactor, factor_id: str) -> bytes | None:
        """The factor's secret, or None (logged) when its key is no longer configured."""
        try:
            return totp_keys.open("secret", factor.sealed_secret, factor_id)
        except SealError:
            log.error("factor %s: its secret does not open (TOTP key retired?)", factor_id)
            return None

    async def _new_recovery_codes(
        self, totp_keys: TotpKeys, factor_id: str
    ) -> tuple[list[str], RecoveryHashes]:
        """Ten recovery codes as shown, and their hashes as stored (argon2id over a keyed
        HMAC of factor id, slot and code: one attempt costs one hash)."""
        plain = [new_recovery_code() for _ in range(RECOVERY_CODES)]
        key_id = totp_keys.current_id
        hashed = await asyncio.gather(
            *(
                self._hasher.hash_keyed(_mac(totp_keys.recovery_mac(key_id, factor_id, slot, code)))
                for slot, code in enumerate(plain)
            )
        )
        recovery = RecoveryHashes(
            key_id=key_id, params=hashed[0][0], digests=[digest for _, digest in hashed]
        )
        return [shown_recovery_code(slot, code) for slot, code in enumerate(plain)], recovery


def _match(
    secret: bytes | None, params: TotpParams, code: str, now_s: float, window: int
) -> int | None:
    """The highest step of the window whose code is ``code`` (None: none, or no secret)."""
    if secret is None or len(code) != params.digits:
        return None
    return matching_step(secret, params, code, now_s, window)


def _mac(mac: bytes | None) -> bytes:
    assert mac is not None  # the current key always keys
    return mac
