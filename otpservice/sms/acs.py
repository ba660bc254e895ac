"""Azure Communication Services SMS: the REST send call, signed as the official SDKs sign it.

Signing (``azure-communication-sms`` ``HMACCredentialsPolicy``): the string
``VERB\\nPATH?QUERY\\nDATE;HOST;BASE64(SHA256(BODY))`` is MACed with HMAC-SHA256 under the
base64-decoded access key, over the exact body bytes sent. Each send carries a
``repeatabilityRequestId`` (our send id) and ``repeatabilityFirstSent`` (the first attempt's
time), so ACS drops a repeat: a retry after a timeout is safe here, and only here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from email.utils import formatdate
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import msgspec

from otpservice.models import DeliveryStatus, InboundSms
from otpservice.sms.http import post
from otpservice.sms.outcomes import NotAccepted, OutcomeUnknown, Rejected, SendReceipt

if TYPE_CHECKING:
    import httpx

    from otpservice.config.schema import AcsProvider
    from otpservice.sms.outcomes import OutboundSms


class _Recipient(msgspec.Struct, rename="camel", omit_defaults=True):
    to: str
    repeatability_request_id: str
    repeatability_first_sent: str


class _Options(msgspec.Struct, rename="camel", omit_defaults=True):
    enable_delivery_report: bool
    tag: str = ""


class _SendRequest(msgspec.Struct, rename="camel"):
    from_: str = msgspec.field(name="from")
    sms_recipients: list[_Recipient] = msgspec.field(default_factory=list)
    message: str = ""
    sms_send_options: _Options | None = None


class _RecipientResult(msgspec.Struct, rename="camel"):
    to: str = ""
    message_id: str | None = None
    http_status_code: int = 0
    successful: bool = False
    error_message: str | None = None


class _SendResponse(msgspec.Struct):
    value: list[_RecipientResult]


def parse_connection_string(text: str) -> tuple[str, str]:
    """The endpoint (no trailing slash) and access key; keys match case-insensitively.

    Raises:
        ValueError: either part is missing.
    """
    parts: dict[str, str] = {}
    for item in text.split(";"):
        key, sep, value = item.partition("=")  # the first "=": base64 padding stays in the key
        if sep:
            parts[key.strip().lower()] = value.strip()
    endpoint, key = parts.get("endpoint", ""), parts.get("accesskey", "")
    if not endpoint.startswith(("https://", "http://")) or not key:
        raise ValueError(
            "expected endpoint=https://<resource>.communication.azure.com/;accesskey=<key>"
        )
    return endpoint.rstrip("/"), key


def rfc1123(timestamp: float) -> str:
    """``Wed, 13 Apr 2022 18:09:12 GMT``."""
    return formatdate(timestamp, usegmt=True)


def sign_request(method: str, url: str, body: bytes, access_key: str, date: str) -> dict[str, str]:
    """The headers that authenticate one request with an ACS access key."""
    parts = urlsplit(url)
    path_and_query = parts.path + (f"?{parts.query}" if parts.query else "")
    content_hash = base64.b64encode(hashlib.sha256(body).digest()).decode()
    to_sign = f"{method.upper()}\n{path_and_query}\n{date};{parts.netloc};{content_hash}"
    digest = hmac.new(base64.b64decode(access_key), to_sign.encode(), hashlib.sha256).digest()
    signature = base64.b64encode(digest).decode()
    return {
        "x-ms-date": date,
        "x-ms-content-sha256": content_hash,
        "Authorization": (
            f"HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature={signature}"
        ),
    }


class AcsSender:
    """Sends through one ACS resource and sender number."""

    deduplicates = True

    def __init__(self, settings: AcsProvider, client: httpx.AsyncClient) -> None:
        self.name = settings.label
        self._endpoint, self._key = parse_connection_string(settings.connection_string)
        self._url = f"{self._endpoint}/sms?api-version={settings.api_version}"
        self._from = settings.from_number
        self._client = client
        self._timeout = settings.timeout_seconds

    async def send(self, message: OutboundSms) -> SendReceipt:
        """Send one message; ``SendFailure`` when ACS did not take it."""
        body = msgspec.json.encode(
            _SendRequest(
                from_=self._from,
                sms_recipients=[
                    _Recipient(
                        to=message.to,
                        repeatability_request_id=message.send_id,
                        repeatability_first_sent=rfc1123(message.first_attempt_at),
                    )
                ],
                message=message.body,
                # A keyword answer (no challenge) needs no report.
                sms_send_options=_Options(
                    enable_delivery_report=bool(message.challenge_id), tag=message.challenge_id
                ),
            )
        )
        headers = {
            "Content-Type": "application/json",
            **sign_request("POST", self._url, body, self._key, rfc1123(time.time())),
        }
        response = await post(
            self._client,
            self.name,
            self._url,
            content=body,
            headers=headers,
            time_limit=self._timeout,
        )
        # A 202 can still hold a failed recipient: each one has its own status.
        try:
            result = msgspec.json.decode(response.content, type=_SendResponse).value[0]
        except (msgspec.DecodeError, IndexError) as exc:
            # A 2xx: ACS may well have taken it. It drops repeats, so asking again is safe.
            raise OutcomeUnknown(self.name, "bad_answer", "unreadable send response") from exc
        if result.successful:
            return SendReceipt(provider=self.name, message_id=result.message_id)
        status, detail = result.http_status_code, result.error_message or ""
        if status == 429 or status >= 500:
            raise NotAccepted(self.name, "busy", f"recipient HTTP {status}: {detail}")
        raise Rejected(self.name, "refused", f"recipient HTTP {status}: {detail}")


# --------------------------------------------------------------------------- Event Grid

DELIVERY_REPORT = "Microsoft.Communication.SMSDeliveryReportReceived"
SMS_RECEIVED = "Microsoft.Communication.SMSReceived"
SUBSCRIPTION_VALIDATION = "Microsoft.EventGrid.SubscriptionValidationEvent"

# ACS report statuses ("Delivered" and "Failed" are documented) as delivery states.
REPORTED_STATUS = {"delivered": DeliveryStatus.DELIVERED, "failed": DeliveryStatus.FAILED}


class EventGridEvent(msgspec.Struct, frozen=True):
    """One event, from either delivery schema: Event Grid (``eventType``) or CloudEvents
    (``type``). ``data`` keys are lower-cased: ACS sends them in either case."""

    type: str
    id: str
    data: dict[str, object]


class DeliveryReport(msgspec.Struct, frozen=True):
    """What an ACS delivery report says about one of our messages."""

    challenge_id: str
    status: DeliveryStatus
    message_id: str
    detail: str


def parse_events(body: bytes) -> list[EventGridEvent]:
    """The events of an Event Grid delivery: a JSON array or one object, either schema.

    Raises:
        ValueError: the body is not events.
    """
    try:
        raw = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise ValueError("the body is not JSON") from exc
    items = raw if isinstance(raw, list) else [raw]
    events = []
    for item in items:
        if not isinstance(item, dict):
            raise ValueError("an event is not an object")
        kind = item.get("eventType") or item.get("type")
        data = item.get("data") or {}
        if not isinstance(kind, str) or not isinstance(data, dict):
            raise ValueError("an event has no type or data")
        events.append(
            EventGridEvent(
                type=kind,
                id=str(item.get("id", "")),
                data={str(k).lower(): v for k, v in data.items()},
            )
        )
    return events


def delivery_report(event: EventGridEvent) -> DeliveryReport | None:
    """The report in a ``SMSDeliveryReportReceived`` event, or None (not ours, or no news)."""
    if event.type != DELIVERY_REPORT:
        return None
    status = REPORTED_STATUS.get(str(event.data.get("deliverystatus", "")).lower())
    tag = event.data.get("tag")
    if status is None or not isinstance(tag, str) or not tag:
        return None
    return DeliveryReport(
        challenge_id=tag,
        status=status,
        message_id=str(event.data.get("messageid", "")),
        detail=str(event.data.get("deliverystatusdetails", "")),
    )


def inbound_sms(event: EventGridEvent) -> InboundSms | None:
    """The message in an ``SMSReceived`` event, or None."""
    if event.type != SMS_RECEIVED:
        return None
    sender, recipient = str(event.data.get("from", "")), str(event.data.get("to", ""))
    return InboundSms(
        sender=sender if sender.startswith("+") else f"+{sender}",
        recipient=recipient if recipient.startswith("+") or not recipient else f"+{recipient}",
        body=str(event.data.get("message", "")),
        message_id=str(event.data.get("messageid", "")),
    )
