"""Twilio: the Messages API, with a status callback pointing back at this service.

Twilio has no idempotency key for a send, so a request that timed out is never repeated
(``OutcomeUnknown``): a phone must not get two codes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import TYPE_CHECKING
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx
import msgspec

from otpservice.models import DeliveryStatus
from otpservice.sms.http import post
from otpservice.sms.outcomes import NotAccepted, Rejected, SendReceipt

if TYPE_CHECKING:
    from otpservice.config.schema import TwilioProvider
    from otpservice.sms.outcomes import OutboundSms

# Error codes that mean "this number cannot get this message", whatever we retry: invalid
# or unreachable number, not SMS-capable, unsubscribed (STOP), blocked region or sender.
PERMANENT_ERRORS = {
    21211: "invalid_number",
    21214: "invalid_number",
    21408: "region_not_enabled",
    21608: "unverified_number",
    21610: "opted_out",
    21612: "unreachable_number",
    21614: "not_mobile",
    21635: "not_mobile",
}


STATUS_CALLBACK_PATH = "/webhooks/twilio/status"
INBOUND_PATH = "/webhooks/twilio/inbound"
# The answer Twilio expects from an inbound-message webhook: TwiML that does nothing.
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'

# Twilio's message statuses that move a delivery state (queued, sending, accepted... do not).
REPORTED_STATUS = {
    "sent": DeliveryStatus.SENT,
    "delivered": DeliveryStatus.DELIVERED,
    "undelivered": DeliveryStatus.UNDELIVERED,
    "failed": DeliveryStatus.FAILED,
}


def signature(url: str, params: list[tuple[str, str]], auth_token: str) -> str:
    """``X-Twilio-Signature`` of a request: HMAC-SHA1 of the URL and the sorted parameters."""
    signed = url
    for name in sorted({name for name, _ in params}):
        for value in sorted({v for n, v in params if n == name}):
            signed += name + value
    digest = hmac.new(auth_token.encode(), signed.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def signature_is_valid(
    url: str, params: list[tuple[str, str]], received: str, auth_token: str
) -> bool:
    """True when ``received`` signs the request; tried with and without the default port, as
    Twilio's own validator does."""
    if not received.isascii():
        return False  # compare_digest takes only ASCII text
    return any(
        hmac.compare_digest(signature(variant, params, auth_token), received)
        for variant in _port_variants(url)
    )


def _port_variants(url: str) -> list[str]:
    parts = urlsplit(url)
    host = parts.hostname or ""
    default = 443 if parts.scheme == "https" else 80
    without = urlunsplit(parts._replace(netloc=host))
    with_port = urlunsplit(parts._replace(netloc=f"{host}:{parts.port or default}"))
    return [without, with_port]


class _Error(msgspec.Struct):
    code: int | None = None
    message: str = ""


class _Message(msgspec.Struct):
    sid: str


class TwilioSender:
    """Sends through one Twilio account, from a number or a Messaging Service."""

    deduplicates = False

    def __init__(
        self, settings: TwilioProvider, client: httpx.AsyncClient, public_base_url: str | None
    ) -> None:
        self.name = settings.label
        base = settings.api_base_url.rstrip("/")
        self._url = f"{base}/2010-04-01/Accounts/{settings.account_sid}/Messages.json"
        self._auth = httpx.BasicAuth(settings.account_sid, settings.auth_token)
        if settings.messaging_service_sid is not None:
            self._sender = {"MessagingServiceSid": settings.messaging_service_sid}
        else:
            self._sender = {"From": settings.from_number or ""}
        self._callback_url = (
            f"{public_base_url.rstrip('/')}{STATUS_CALLBACK_PATH}" if public_base_url else None
        )
        self._client = client
        self._timeout = settings.timeout_seconds

    async def send(self, message: OutboundSms) -> SendReceipt:
        """Send one message; ``SendFailure`` when Twilio did not take it."""
        form = {"To": message.to, "Body": message.body, **self._sender}
        if self._callback_url and message.challenge_id:
            # The challenge id rides in the URL, which Twilio signs with the rest.
            form["StatusCallback"] = (
                f"{self._callback_url}?{urlencode({'challenge_id': message.challenge_id})}"
            )
        response = await post(
            self._client,
            self.name,
            self._url,
            content=urlencode(form).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            time_limit=self._timeout,
            auth=self._auth,
            refusal=self._refusal,
        )
        try:
            sid = msgspec.json.decode(response.content, type=_Message).sid
        except msgspec.DecodeError:
            # Taken (2xx) but unreadable: the message exists; we only lack its id.
            sid = None
        return SendReceipt(provider=self.name, message_id=sid)

    def _refusal(self, response: httpx.Response) -> Rejected | NotAccepted:
        """A 4xx: permanent for a number problem; anything else (our account or config) lets
        the next provider try."""
        try:
            error = msgspec.json.decode(response.content, type=_Error)
        except msgspec.DecodeError:
            error = _Error()
        detail = f"HTTP {response.status_code} error {error.code}: {error.message}"
        reason = PERMANENT_ERRORS.get(error.code or 0)
        if reason is not None:
            return Rejected(self.name, reason, detail)
        return NotAccepted(self.name, "refused", detail)
