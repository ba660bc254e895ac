"""IdempotencyStore: records behind ``Idempotency-Key`` headers, kept 24 hours."""

from __future__ import annotations

import contextlib
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from otpservice.errors import StoreUnavailable
from otpservice.models import IdempotencyRecord

if TYPE_CHECKING:
    from otpservice.store.keys import KeySpace
    from otpservice.store.scripts import StoreCommands

RECORD_TTL_SECONDS = 24 * 3600
# A claim whose request died (process killed, store lost) frees the key after this long.
PENDING_TTL_SECONDS = 60

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(IdempotencyRecord)


@dataclass(frozen=True, slots=True)
class HeldRecord:
    """Another request's record, as a claim found it: decoded, and as stored (what ``swap``
    compares: encoding it again could differ, if a later release added a field)."""

    record: IdempotencyRecord
    stored: bytes


class IdempotencyStore:
    """Claims a key for one request, then keeps that request's result for replays."""

    def __init__(self, commands: StoreCommands, keys: KeySpace) -> None:
        self._commands = commands
        self._keys = keys

    async def claim(self, client: str, key: str, fingerprint: str) -> HeldRecord | None:
        """Claim ``key`` for a request; return the existing record if someone holds it.

        Raises:
            StoreUnavailable: the claim could not be confirmed; if this request's claim stands
                on the primary, it is deleted again (never another request's record), so a
                retry runs instead of finding the key in use.
        """
        record = IdempotencyRecord(fingerprint=fingerprint, claim_token=secrets.token_hex(8))
        pending = _encoder.encode(record)
        try:
            reply = await self._run(client, key, "claim", pending, PENDING_TTL_SECONDS)
        except StoreUnavailable:
            with contextlib.suppress(StoreUnavailable):
                await self._run(client, key, "release_if", pending, 0)
            raise
        if int(reply[0]) == 1:
            return None
        raw = reply[1]
        stored = raw.encode() if isinstance(raw, str) else bytes(raw)
        return HeldRecord(_decoder.decode(stored), stored)

    async def complete(
        self,
        client: str,
        key: str,
        record: IdempotencyRecord,
        ttl_seconds: int = RECORD_TTL_SECONDS,
    ) -> None:
        """Store the finished request's result for replays (or what a retry must finish), for
        24 hours (or ``ttl_seconds``)."""
        await self._run(client, key, "complete", _encoder.encode(record), ttl_seconds)

    async def swap(
        self, client: str, key: str, expected: HeldRecord, new: IdempotencyRecord
    ) -> bool:
        """Put ``new`` in place of ``expected`` (for ``PENDING_TTL_SECONDS``); False when the
        record there is another (another retry got there first)."""
        reply = await self._commands.run_script(
            self._commands.scripts.idempotency,
            [self._keys.idempotency(client, key)],
            ["swap", _encoder.encode(new), PENDING_TTL_SECONDS, expected.stored],
        )
        return int(reply[0]) == 1

    async def release(self, client: str, key: str) -> None:
        """Forget a claim whose request failed, so a retry runs again."""
        await self._run(client, key, "release", b"", 0)

    async def _run(
        self, client: str, key: str, op: str, record: bytes, ttl_seconds: int
    ) -> list[Any]:
        return await self._commands.run_script(
            self._commands.scripts.idempotency,
            [self._keys.idempotency(client, key)],
            [op, record, ttl_seconds],
        )
