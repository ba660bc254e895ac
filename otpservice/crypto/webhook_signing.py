"""Signing outgoing webhooks the Standard Webhooks way (the ``standardwebhooks`` package).

Used for messages to a generic SMS gateway and for events to the login app: the same three
headers, and a ``webhook-id`` that stays the same on every attempt, so the receiver can drop
repeats.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook

from otpservice.errors import ConfigError

# Standard Webhooks asks for secrets of 24 to 64 random bytes.
MIN_SECRET_BYTES = 24


def secret_key(secret: str, where: str) -> bytes:
    """The key bytes of a Standard Webhooks secret: ``whsec_`` + base64 of at least 24 bytes.

    Raises:
        ConfigError: naming ``where``, when it is not one.
    """
    text = secret.removeprefix("whsec_")
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"{where} must be 'whsec_' + base64 of at least {MIN_SECRET_BYTES} random bytes "
            "(echo whsec_$(openssl rand -base64 32))",
            key=where,
        )
    return key


def check_secret(secret: str, where: str) -> None:
    """Refuse a secret that is not ``whsec_`` + base64 of at least 24 bytes.

    Raises:
        ConfigError: naming ``where``.
    """
    secret_key(secret, where)


class WebhookSigner:
    """Signs JSON bodies with one Standard Webhooks secret (``whsec_`` + base64)."""

    def __init__(self, secret: str) -> None:
        self._webhook = Webhook(secret)

    def headers(self, message_id: str, body: bytes) -> dict[str, str]:
        """``Content-Type`` and the ``webhook-id``, ``-timestamp`` and ``-signature`` headers."""
        now = datetime.now(UTC)
        return {
            "Content-Type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": self._webhook.sign(message_id, now, body.decode()),
        }
