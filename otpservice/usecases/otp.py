"""OtpService: the use cases. Issue a challenge, verify a code, read or cancel a challenge.

Plain async Python: no web framework, no Redis commands (those live in ``store/``).
"""

from __future__ import annotations

import ipaddress
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import msgspec

from otpservice.crypto.codes import fixed_code_hash, generate_code, is_well_formed_code
from otpservice.crypto.sealing import seal_outbox_entry
from otpservice.errors import (
    ChallengeNotFound,
    DestinationNotAllowed,
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    IncorrectCode,
    InvalidInput,
    NumberLocked,
    OtpError,
    QueueWriteInDoubt,
    RecipientOptedOut,
    Refused,
    StoreUnavailable,
    TooManyAttempts,
    Unavailable,
)
from otpservice.models import (
    ChallengeStatus,
    DeliveryReport,
    DeliveryStatus,
    Destination,
    IdempotencyRecord,
    InDoubt,
    IssuedChallenge,
)
from otpservice.phone import parse_phone
from otpservice.sms.templates import MessageTemplates

if TYPE_CHECKING:
    from otpservice.config.schema import Settings
    from otpservice.crypto.codes import CodeHasher
    from otpservice.crypto.sealing import MessageSealer
    from otpservice.models import (
        ApprovedChallenge,
        ChallengeRequest,
        ChallengeView,
        FixedCode,
        OutboxEntry,
    )
    from otpservice.phone import PhoneNumber
    from otpservice.store import ChallengeKeys, ChallengeStore, IdempotencyStore, KeySpace
    from otpservice.store.audit import AuditLog
    from otpservice.store.idempotency import HeldRecord
    from otpservice.store.queues import QueueStore
    from otpservice.usecases.abuse import AbusePolicy, Admission
    from otpservice.usecases.analytics import Analytics
    from otpservice.usecases.events import AppEvents

log = logging.getLogger("otpservice.otp")  # a log field: kept as named before the move

# The provider a test number's challenge is recorded as sent by (analytics, metrics, reads).
TEST_NUMBER_PROVIDER = "test_number"


class OtpService:
    """Issues and verifies one-time codes."""

    def __init__(
        self,
        settings: Settings,
        *,
        keys: KeySpace,
        challenges: ChallengeStore,
        idempotency: IdempotencyStore,
        hasher: CodeHasher,
        outbox: QueueStore[OutboxEntry],
        sealer: MessageSealer,
        events: AppEvents,
        abuse: AbusePolicy,
        analytics: Analytics,
        audit: AuditLog,
        fixed_codes: dict[str, FixedCode] | None = None,
    ) -> None:
        """``fixed_codes``: the test numbers' codes by number (``validation.fixed_codes_of``)."""
        self._settings = settings
        self._audit = audit
        self._fixed_codes = fixed_codes or {}
        self._keys = keys
        self._challenges = challenges
        self._idempotency = idempotency
        self._hasher = hasher
        self._outbox = outbox
        self._sealer = sealer
        self._events = events
        self._abuse = abuse
        self._analytics = analytics
        self._templates = MessageTemplates(settings)

    async def issue_challenge(
        self, request: ChallengeRequest, *, client: str, idempotency_key: str | None = None
    ) -> tuple[IssuedChallenge, bool]:
        """Create a challenge and queue its code for sending; return it and whether it is a replay.

        With an ``idempotency_key``, a retried request returns the first challenge (with its
        current status) instead of sending a second SMS.

        Raises:
            InvalidInput, RateLimited, NumberLocked, IdempotencyConflict, Unavailable.
        """
        phone = parse_phone(request.phone)
        if request.client_ip is not None:
            _check_ip(request.client_ip)
        try:
            return await self._issue_once(phone, request, client, idempotency_key)
        except (Refused, DestinationNotAllowed, RecipientOptedOut) as exc:
            # Logged here, once, whichever rule it was (number limits, abuse rules, opt-out).
            rule = exc.rule or exc.code
            log.info("challenge refused by rule %s (%s)", rule, phone.region)
            self._analytics.count(f"refused:{rule}", country=phone.region)
            raise

    async def _issue_once(
        self,
        phone: PhoneNumber,
        request: ChallengeRequest,
        client: str,
        idempotency_key: str | None,
    ) -> tuple[IssuedChallenge, bool]:
        if idempotency_key is None:
            return await self._issue(phone, request, client), False

        # Keyed, so the record in Redis does not give the number away to a dictionary attack.
        fingerprint = self._keys.fingerprint(msgspec.json.encode(request))
        held = await self._idempotency.claim(client, idempotency_key, fingerprint)
        if held is not None:
            record = held.record
            if record.fingerprint != fingerprint:
                raise IdempotencyKeyReused(
                    "this Idempotency-Key was used with a different request body"
                )
            if record.in_doubt is not None and not record.resolving:
                return await self._resolve_in_doubt(held, phone, request, client, idempotency_key)
            if record.result is None:
                raise IdempotencyKeyInUse(
                    "a request with this Idempotency-Key is still being processed"
                )
            return await self._replay(record.result, client), True
        try:
            issued = await self._issue(phone, request, client, keyed=True)
        except _InDoubt as doubt:
            await self._keep_in_doubt(client, idempotency_key, fingerprint, doubt.state)
            raise doubt.cause from None
        except BaseException:
            await self._release(client, idempotency_key)
            raise
        await self._complete(client, idempotency_key, fingerprint, issued)
        return issued, False

    async def _resolve_in_doubt(
        self,
        held: HeldRecord,
        phone: PhoneNumber,
        request: ChallengeRequest,
        client: str,
        idempotency_key: str,
    ) -> tuple[IssuedChallenge, bool]:
        """A retry of a keyed request answered 503 in doubt: if its challenge is there (proven
        on the replicas), queue its SMS, once, and answer it; if a failover lost it, run the
        request anew. One retry at a time does this; the others are told the key is in use."""
        state = held.record.in_doubt
        assert state is not None
        fingerprint = held.record.fingerprint
        resolving = msgspec.structs.replace(held.record, resolving=True)
        try:
            taken = await self._idempotency.swap(client, idempotency_key, held, resolving)
        except Unavailable:
            await self._keep_in_doubt(client, idempotency_key, fingerprint, state)
            raise
        if not taken:
            raise IdempotencyKeyInUse("a request with this Idempotency-Key is being finished")
        keys = self._keys_for(state.challenge_id)
        confirmed = False
        try:
            if not await self._challenges.confirm(keys):
                log.warning("challenge %s in doubt was lost; issuing anew", state.challenge_id)
                issued = await self._issue(phone, request, client, keyed=True)
                await self._complete(client, idempotency_key, fingerprint, issued)
                return issued, False
            confirmed = True
            await self._queue_sms(state.entry, shard=state.queue_shard)
            issued = state.issued or await self._issued_as_stored(keys, client)
        except _InDoubt as doubt:
            await self._keep_in_doubt(client, idempotency_key, fingerprint, doubt.state)
            raise doubt.cause from None
        except QueueWriteInDoubt as exc:
            state = msgspec.structs.replace(state, queue_shard=exc.shard)
            await self._keep_in_doubt(client, idempotency_key, fingerprint, state)
            raise
        except Unavailable:
            await self._keep_in_doubt(client, idempotency_key, fingerprint, state)
            raise
        except BaseException:
            if confirmed:  # its SMS is queued, or will be by the next retry: keep it so
                await self._keep_in_doubt(client, idempotency_key, fingerprint, state)
            else:
                await self._release(client, idempotency_key)
            raise
        await self._complete(client, idempotency_key, fingerprint, issued)
        # Counted now, once its record is complete: the first try stopped before counting.
        self._abuse.issued_after_doubt(phone, client=client, client_ip=request.client_ip)
        self._analytics.count("issued", country=phone.region)
        log.info("challenge %s in doubt confirmed and its SMS queued", state.challenge_id)
        return await self._replay(issued, client), True

    async def _issued_as_stored(self, keys: ChallengeKeys, client: str) -> IssuedChallenge:
        """The first answer of a challenge whose issuing was answered 503, from the store."""
        view = await self._challenges.read(keys, client)
        return IssuedChallenge(
            challenge_id=view.challenge_id,
            created_at_ms=view.created_at_ms,
            expires_at_ms=view.expires_at_ms,
            attempts_left=view.attempts_left,
            resend_after_ms=self._settings.send_limits.min_interval_seconds * 1000,
            status=view.status,
        )

    async def _keep_in_doubt(
        self, client: str, idempotency_key: str, fingerprint: str, state: InDoubt
    ) -> None:
        """Keep the key's claim with what a retry must finish, until the code expires (kept
        again by a later retry, never longer)."""
        record = IdempotencyRecord(fingerprint=fingerprint, in_doubt=state)
        left_ms = state.entry.deadline_ms - int(time.time() * 1000)
        try:
            await self._idempotency.complete(
                client, idempotency_key, record, ttl_seconds=max(1, -(-left_ms // 1000))
            )
        except Unavailable:
            # The pending claim expires in a minute; a retry after it runs anew.
            log.warning("challenge %s in doubt, and its claim not kept", state.challenge_id)

    async def _release(self, client: str, idempotency_key: str) -> None:
        try:
            await self._idempotency.release(client, idempotency_key)
        except Unavailable:
            # The claim expires by itself; the caller should see the original error.
            log.warning("could not release an idempotency claim; it expires in a minute")

    async def _complete(
        self, client: str, idempotency_key: str, fingerprint: str, issued: IssuedChallenge
    ) -> None:
        try:
            await self._idempotency.complete(
                client, idempotency_key, IdempotencyRecord(fingerprint=fingerprint, result=issued)
            )
        except Unavailable:
            # The SMS is out and the challenge is live: answer with it. A retry within the
            # claim's minute is told the key is in use; after it, it would send a new code.
            log.warning(
                "challenge %s issued, but its idempotency record was not saved", issued.challenge_id
            )

    async def verify_challenge(
        self, challenge_id: str, code: str, *, client: str
    ) -> ApprovedChallenge:
        """Check ``code`` against the challenge: at most one success, attempts counted first.

        Raises:
            InvalidInput: ``invalid_code_format``; costs no attempt.
            IncorrectCode, TooManyAttempts, NumberLocked, ChallengeNotFound, ChallengeGone,
            Unavailable.
        """
        if not is_well_formed_code(code, self._settings.code.digits):
            raise InvalidInput(
                f"code must be exactly {self._settings.code.digits} ASCII digits",
                code="invalid_code_format",
            )
        # A malformed id is refused at once: its format is public, there is no timing to hide.
        keys = self._keys.for_challenge(challenge_id)
        if keys is None:
            raise ChallengeNotFound("no such challenge")
        # Admission comes before the attempt is counted, so a busy refusal costs no attempt.
        with self._hasher.admit():
            try:
                if keys.forged:  # an opaque id no key made: it names no slot to ask
                    raise ChallengeNotFound("no such challenge")
                reservation = await self._challenges.spend_attempt(keys, client)
            except ChallengeNotFound:
                # As slow as a real check, so timing does not tell whether an id exists.
                await self._hasher.waste_time()
                raise
            matched = await self._hasher.check_code(challenge_id, code, reservation.code_hash)
        try:
            approved = await self._challenges.record_verdict(
                keys, client, reservation, matched=matched
            )
        except NumberLocked as exc:
            self._analytics.count("attempts_failed")
            # An audit line and an event: the number is locked (often by this very failure).
            log.warning(
                "challenge %s failed; number locked for %s s", challenge_id, exc.retry_after_seconds
            )
            locked_for = exc.retry_after_seconds or 0
            await self._events.lockout(challenge_id, locked_for_seconds=locked_for)
            raise
        except OtpError as exc:
            if isinstance(exc, IncorrectCode | TooManyAttempts):
                self._analytics.count("attempts_failed")
            log.info("challenge %s failed: %s", challenge_id, exc.code)
            raise
        log.info("challenge approved: %s", challenge_id)
        self._abuse.verified(approved.where)
        self._analytics.verified(
            country=approved.where.region,
            seconds=(approved.approved_at_ms - approved.created_at_ms) / 1000,
        )
        return approved

    async def record_report(
        self,
        challenge_id: str,
        status: DeliveryStatus,
        *,
        report: DeliveryReport,
    ) -> bool:
        """Record a provider's delivery report; False when the challenge is unknown or gone.

        Reports may come late, twice or out of order: the state only moves forward.
        """
        keys = self._keys.for_challenge(challenge_id)
        if keys is None or keys.forged:
            return False
        update = await self._challenges.record_delivery(keys, status, send_id="", report=report)
        if update.outcome == "missing":
            return False
        log.info(
            "delivery report for challenge %s: %s (%s)", challenge_id, status.value, update.outcome
        )
        self._analytics.delivery(status, update, report.provider)
        if update.outcome == "ok":
            # "ok" again for a repeated report: the event goes again with the same id.
            await self._events.delivery_ended(
                challenge_id,
                status,
                provider=report.provider or update.provider,
                detail=report.detail,
            )
        return True

    async def get_challenge(self, challenge_id: str, *, client: str) -> ChallengeView:
        """The challenge's status.

        Raises:
            ChallengeNotFound: unknown, forgotten, or another client's.
        """
        return await self._challenges.read(self._keys_for(challenge_id), client)

    async def cancel_challenge(self, challenge_id: str, *, client: str) -> ChallengeView:
        """Cancel a pending challenge and return its view.

        Raises:
            ChallengeNotFound, ChallengeGone.
        """
        keys = self._keys_for(challenge_id)
        cancelled_now = await self._challenges.cancel(keys, client)
        view = await self._challenges.read(keys, client)
        if cancelled_now:
            self._analytics.count("cancelled")
        return view

    def close(self) -> None:
        """Release the hashing threads."""
        self._hasher.close()

    async def start(self) -> None:
        """Connect to the store before serving; a store that is down now is only logged."""
        try:
            await self._challenges.prepare()
        except Unavailable:
            log.warning("the store is unreachable at start-up; /readyz will say when it is back")

    async def check_ready(self) -> None:
        """Raise ``StoreUnavailable`` unless the store runs scripts and takes writes."""
        await self._challenges.check_ready()

    async def _issue(
        self, phone: PhoneNumber, request: ChallengeRequest, client: str, *, keyed: bool = False
    ) -> IssuedChallenge:
        """Issue a challenge and queue its SMS.

        Raises:
            _InDoubt: (``keyed`` only) the store failed after the challenge may have been
                written; the caller keeps the key's claim for a retry to finish.
        """
        settings = self._settings
        keys = self._keys.new_challenge(phone.e164)
        admission: Admission | None = None
        try:
            fixed = self._fixed_code(phone)
            with self._hasher.admit():
                # Refuse a throttled or locked number before spending a hash on it.
                await self._challenges.check_send(keys)
                admission = await self._abuse.admit(
                    phone, client=client, client_ip=request.client_ip, fraud_guard=fixed is None
                )
                if fixed is not None:
                    issued = await self._issue_fixed(phone, request, client, keys, fixed)
                    self._analytics.count("issued", country=phone.region)
                    return issued
                code = generate_code(settings.code.digits)
                code_hash = await self._hasher.hash_code(keys.challenge_id, code)
            entry = seal_outbox_entry(
                self._sealer,
                to=phone.e164,
                body=self._templates.render(request.locale, code),
                challenge_id=keys.challenge_id,
                send_id=str(uuid.uuid4()),
                first_attempt_at=time.time(),
                deadline_ms=int(time.time() * 1000) + settings.code.ttl_seconds * 1000,
            )
            try:
                issued = await self._challenges.issue(
                    keys,
                    code_hash=code_hash,
                    client=client,
                    masked_phone=phone.masked(),
                    purpose=request.purpose,
                    where=admission.where,
                )
            except StoreUnavailable as exc:
                if keyed:  # perhaps written: a retry with the key confirms it or issues anew
                    state = InDoubt(challenge_id=keys.challenge_id, entry=entry)
                    raise _InDoubt(state, exc) from exc
                raise
            try:
                await self._queue_sms(entry)
            except StoreUnavailable as exc:
                if keyed:  # perhaps queued: a retry with the key queues it there, once
                    shard = exc.shard if isinstance(exc, QueueWriteInDoubt) else None
                    state = InDoubt(
                        challenge_id=keys.challenge_id,
                        entry=entry,
                        issued=issued,
                        queue_shard=shard,
                    )
                    raise _InDoubt(state, exc) from exc
                # The code may never be sent: make sure it cannot be used either.
                await self._challenges.cancel(keys, client)
                raise
            except BaseException:
                await self._challenges.cancel(keys, client)
                raise
        except _InDoubt:
            raise  # its counts stand: the challenge may be there
        except BaseException:
            # Not issued after all (a hash that failed, a concurrent request that took the
            # number's last send, a message that cannot be queued): the abuse rules' counts
            # go back, so a refused request consumes nothing.
            if admission is not None:
                await self._abuse.give_back(admission)
            raise
        self._abuse.issued(admission)
        self._analytics.count("issued", country=phone.region)
        log.info("challenge issued: %s to %s", keys.challenge_id, phone.masked())
        return issued

    def _fixed_code(self, phone: PhoneNumber) -> FixedCode | None:
        """The number's fixed code while it is a test number (``test_numbers``)."""
        fixed = self._fixed_codes.get(phone.e164)
        if fixed is None or fixed.expires_on < datetime.now(UTC).date():
            return None
        return fixed

    async def _issue_fixed(
        self,
        phone: PhoneNumber,
        request: ChallengeRequest,
        client: str,
        keys: ChallengeKeys,
        fixed: FixedCode,
    ) -> IssuedChallenge:
        """A test number's challenge: its fixed code, and no SMS (recorded as sent by the
        "test_number" provider, without a delivery event). Never kept in doubt: a retry of
        a 503 issues anew, and sends nothing either."""
        if fixed.code is not None:
            code_hash = await self._hasher.hash_code(keys.challenge_id, fixed.code)
        else:
            code_hash = fixed_code_hash(fixed.phc or "")
        issued = await self._challenges.issue(
            keys,
            code_hash=code_hash,
            client=client,
            masked_phone=phone.masked(),
            purpose=request.purpose,
            where=Destination(region=phone.region),
        )
        try:
            await self._challenges.record_delivery(
                keys,
                DeliveryStatus.SENT,
                send_id="",
                report=DeliveryReport(provider=TEST_NUMBER_PROVIDER),
            )
        except Unavailable:
            log.warning(
                "challenge %s: its test-number delivery was not recorded", keys.challenge_id
            )
        self._analytics.count("sent", country=phone.region, provider=TEST_NUMBER_PROVIDER)
        log.warning(
            "test number %s used by client %s: challenge %s, no SMS sent",
            phone.masked(),
            client,
            keys.challenge_id,
        )
        await self._audit.record(
            "test_number.used",
            actor=client,
            data={"phone": phone.masked(), "challenge_id": keys.challenge_id},
        )
        return issued

    async def _queue_sms(self, entry: OutboxEntry, shard: int | None = None) -> None:
        """Queue a challenge's SMS, at most once per send id and shard while the code lives
        (``shard``: where an earlier try may have put it, tried first)."""
        await self._outbox.add(
            entry,
            dedupe_id=entry.send_id,
            remember_ms=self._settings.code.ttl_seconds * 1000,
            shard=shard,
        )

    async def _replay(self, issued: IssuedChallenge, client: str) -> IssuedChallenge:
        """The first result of an idempotent request, with the challenge's current state: its
        status, attempts left, and how long until a new code may be sent from now."""
        elapsed_ms = int(time.time() * 1000) - issued.created_at_ms
        issued = msgspec.structs.replace(
            issued, resend_after_ms=max(0, issued.resend_after_ms - elapsed_ms)
        )
        try:
            view = await self._challenges.read(self._keys_for(issued.challenge_id), client)
        except ChallengeNotFound:
            return msgspec.structs.replace(issued, status=ChallengeStatus.EXPIRED, attempts_left=0)
        return msgspec.structs.replace(issued, status=view.status, attempts_left=view.attempts_left)

    def _keys_for(self, challenge_id: str) -> ChallengeKeys:
        keys = self._keys.for_challenge(challenge_id)
        if keys is None or keys.forged:
            raise ChallengeNotFound("no such challenge")
        return keys


class _InDoubt(Exception):
    """Issuing failed after the challenge may have been written: what a keyed retry finishes,
    and the failure to answer with."""

    def __init__(self, state: InDoubt, cause: StoreUnavailable) -> None:
        super().__init__(str(cause))
        self.state = state
        self.cause = cause


def _check_ip(text: str) -> None:
    try:
        address = ipaddress.ip_address(text)
        if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
            raise ValueError("a zone id would make each its own address")
    except ValueError:
        raise InvalidInput(
            "client_ip must be an IPv4 or IPv6 address", code="invalid_client_ip"
        ) from None
