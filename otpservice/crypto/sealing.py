"""Sealing outbox messages (and the numbers of the opt-out index): AES-256-GCM under a key from
a file, with a key id for rotation.

The outbox holds codes on their way to a phone; Redis only ever sees them sealed. The additional
data binds a sealed message to its send id and challenge, so one cannot be moved to another
entry. Two keys can be active (current and previous) while a key is rotated.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from otpservice.errors import ConfigError
from otpservice.models import OutboxEntry

NONCE_BYTES = 12


class SealError(Exception):
    """A sealed message cannot be opened: unknown key id, or tampered with."""


def decode_key(text: str, name: str) -> bytes:
    """A 256-bit key from base64 (standard or URL-safe alphabet).

    Raises:
        ConfigError: naming ``name`` when it is not 32 bytes of base64.
    """
    padded = text.strip() + "=" * (-len(text.strip()) % 4)
    try:
        key = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise ConfigError(
            f"{name} must be 32 random bytes in base64 (openssl rand -base64 32)", key=name
        )
    return key


class SealedSms(msgspec.Struct, frozen=True):
    """What is sealed in a queued message: its recipient and text."""

    to: str
    body: str


class MessageSealer:
    """Seals with the current key; opens with the current or the previous one."""

    def __init__(self, current: bytes, previous: bytes | None = None) -> None:
        self._current_id = _key_id(current)
        self._keys = {_key_id(k): AESGCM(k) for k in (current, previous) if k is not None}

    def seal(self, plaintext: bytes, bound_to: bytes) -> tuple[str, bytes]:
        """The key id and nonce + ciphertext of ``plaintext``, bound to ``bound_to``."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._keys[self._current_id].encrypt(nonce, plaintext, bound_to)
        return self._current_id, nonce + sealed

    def open(self, key_id: str, sealed: bytes, bound_to: bytes) -> bytes:
        """The plaintext sealed under ``key_id``.

        Raises:
            SealError: the key is unknown (rotated out) or the message was altered or moved.
        """
        aead = self._keys.get(key_id)
        if aead is None:
            raise SealError(f"no outbox key with id {key_id}")
        try:
            return aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], bound_to)
        except InvalidTag:
            raise SealError("the sealed message does not open: altered or moved") from None

    def seal_sms(self, to: str, body: str, bound_to: bytes) -> tuple[str, bytes]:
        """``seal`` for a message: the key id and the sealed recipient and text."""
        return self.seal(msgspec.msgpack.encode(SealedSms(to, body)), bound_to)

    def open_sms(self, key_id: str, sealed: bytes, bound_to: bytes) -> SealedSms:
        """The recipient and text ``seal_sms`` sealed.

        Raises:
            SealError: as ``open``, or the content is not a message.
        """
        try:
            return msgspec.msgpack.decode(self.open(key_id, sealed, bound_to), type=SealedSms)
        except msgspec.DecodeError as exc:
            raise SealError(f"the sealed message is no SMS: {exc}") from None

    def seal_text(self, text: str, bound_to: bytes) -> str:
        """``seal`` for a short text kept at rest: ``"<key id>.<base64url>"``."""
        key_id, sealed = self.seal(text.encode(), bound_to)
        return f"{key_id}.{base64.urlsafe_b64encode(sealed).decode()}"

    def open_text(self, sealed_text: str, bound_to: bytes) -> str:
        """The text ``seal_text`` sealed.

        Raises:
            SealError: as ``open``, or it is not such a text.
        """
        key_id, _, sealed = sealed_text.partition(".")
        try:
            raw = base64.urlsafe_b64decode(sealed)
            return self.open(key_id, raw, bound_to).decode()
        except (binascii.Error, ValueError):
            raise SealError("not a sealed text") from None

    def sealed_with_current(self, sealed_text: str) -> bool:
        """Whether ``sealed_text`` is under the current key (else it is re-sealed before its
        key is retired)."""
        return sealed_text.partition(".")[0] == self._current_id


def _key_id(key: bytes) -> str:
    return hmac.new(key, b"otpservice outbox key id", hashlib.sha256).hexdigest()[:8]


def seal_outbox_entry(
    sealer: MessageSealer,
    *,
    to: str,
    body: str,
    send_id: str,
    challenge_id: str,
    first_attempt_at: float,
    deadline_ms: int,
) -> OutboxEntry:
    """The outbox entry of one message: recipient and text sealed, bound to the send id."""
    key_id, sealed = sealer.seal_sms(to, body, _outbox_binding(send_id, challenge_id))
    return OutboxEntry(
        send_id=send_id,
        challenge_id=challenge_id,
        key_id=key_id,
        sealed=sealed,
        first_attempt_at=first_attempt_at,
        deadline_ms=deadline_ms,
    )


def open_outbox_entry(sealer: MessageSealer, entry: OutboxEntry) -> SealedSms:
    """The recipient and text of an outbox entry.

    Raises:
        SealError: as ``MessageSealer.open_sms``; also when the entry was moved to another send.
    """
    return sealer.open_sms(
        entry.key_id, entry.sealed, _outbox_binding(entry.send_id, entry.challenge_id)
    )


def _outbox_binding(send_id: str, challenge_id: str) -> bytes:
    return f"{send_id}\0{challenge_id}".encode()
