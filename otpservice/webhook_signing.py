"""Signing outgoing webhooks the Standard Webhooks way (the ``standardwebhooks`` package).

Used for messages to a generic SMS gateway and for events to the login app: the same three
headers, and a ``webhook-id`` that stays the same on every attempt, so the receiver can drop
repeats.
"""

from __future__ import annotations

from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook


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
