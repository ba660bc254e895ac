"""Any other gateway: a JSON POST signed the Standard Webhooks way.

The ``webhook-id`` is the message's send id, the same on every attempt, so a gateway that drops
repeated ids (``deduplicates = true``) makes a retry after a timeout safe.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from otpservice.sms.http import post
from otpservice.sms.outcomes import SendReceipt

if TYPE_CHECKING:
    import httpx

    from otpservice.config.schema import GenericProvider
    from otpservice.sms import BodySigner
    from otpservice.sms.outcomes import OutboundSms


class GatewayMessage(msgspec.Struct, frozen=True):
    """The JSON body the gateway receives."""

    type: str
    id: str
    to: str
    body: str
    challenge_id: str


class _Accepted(msgspec.Struct):
    id: str | None = None


class GenericSender:
    """POSTs each message to one URL."""

    def __init__(
        self, settings: GenericProvider, client: httpx.AsyncClient, signer: BodySigner
    ) -> None:
        """``signer`` signs with ``settings.secret`` (``crypto.webhook_signing``)."""
        self.name = settings.label
        self.deduplicates = settings.deduplicates
        self._url = settings.url
        self._signer = signer
        self._client = client
        self._timeout = settings.timeout_seconds

    async def send(self, message: OutboundSms) -> SendReceipt:
        """Send one message; ``SendFailure`` when the gateway did not take it."""
        body = msgspec.json.encode(
            GatewayMessage(
                type="sms.send",
                id=message.send_id,
                to=message.to,
                body=message.body,
                challenge_id=message.challenge_id,
            )
        )
        headers = self._signer.headers(message.send_id, body)
        response = await post(
            self._client,
            self.name,
            self._url,
            content=body,
            headers=headers,
            time_limit=self._timeout,
        )
        try:
            message_id = msgspec.json.decode(response.content or b"{}", type=_Accepted).id
        except msgspec.DecodeError:
            message_id = None
        return SendReceipt(provider=self.name, message_id=message_id)
