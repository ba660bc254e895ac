"""IdempotencyStore: records behind ``Idempotency-Key`` headers, kept 24 hours."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from otpservice.models import IdempotencyRecord

if TYPE_CHECKING:
    from otpservice.store.keys import KeySpace
    from otpservice.store.scripts import StoreCommands

RECORD_TTL_SECONDS = 24 * 3600
# A claim whose request died (process killed, store lost) frees the key after this long.
PENDING_TTL_SECONDS = 60

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(IdempotencyRecord)


class IdempotencyStore:
    """Claims a key for one request, then keeps that request's result for replays."""

    def __init__(self, commands: StoreCommands, keys: KeySpace) -> None:
        self._commands = commands
        self._keys = keys

    async def claim(self, client: str, key: str, fingerprint: str) -> IdempotencyRecord | None:
        """Claim ``key`` for a request; return the existing record if someone holds it."""
        name = self._keys.idempotency(client, key)
        pending = _encoder.encode(IdempotencyRecord(fingerprint=fingerprint))
        # SET NX then GET: the record may expire in between, so try again until one wins.
        while True:
            async with self._commands.command() as redis:
                if await redis.set(name, pending, nx=True, ex=PENDING_TTL_SECONDS):
                    return None
                raw = await redis.get(name)
            if raw is not None:
                return _decoder.decode(raw.encode() if isinstance(raw, str) else raw)

    async def complete(self, client: str, key: str, record: IdempotencyRecord) -> None:
        """Store the finished request's result for replays, for 24 hours."""
        async with self._commands.command() as redis:
            await redis.set(
                self._keys.idempotency(client, key),
                _encoder.encode(record),
                ex=RECORD_TTL_SECONDS,
            )

    async def release(self, client: str, key: str) -> None:
        """Forget a claim whose request failed, so a retry runs again."""
        async with self._commands.command() as redis:
            await redis.delete(self._keys.idempotency(client, key))
