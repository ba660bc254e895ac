"""Signed provider webhooks as the providers send them: delivery reports and inbound messages."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlencode

import httpx

from otpservice.sms.twilio import signature
from tests.support.helpers import PHONE
from tests.support.servers.providers import TWILIO_SID, TWILIO_TOKEN

SECRET = "event-grid-shared-secret-0123456789"
HEADERS = {"X-Webhook-Secret": SECRET, "aeg-event-type": "Notification"}
INBOUND_URL = "https://otp.example.com/webhooks/twilio/inbound"
OUR_NUMBER = "+15005550006"


def acs_report(tag: str, status: str, *, camel: bool = False) -> dict[str, Any]:
    data = {
        "MessageId": "Outgoing_20200918002213",
        "From": "18005550100",
        "To": "+14155550123",
        "DeliveryStatus": status,
        "DeliveryStatusDetails": "No error.",
        "ReceivedTimestamp": "2020-09-18T00:22:20.2855749Z",
        "Tag": tag,
    }
    if camel:
        data = {(k if k == "Tag" else k[0].lower() + k[1:]): v for k, v in data.items()}
    return {
        "id": "Outgoing_20200918002213",
        "subject": "/phonenumber/14155550123",
        "topic": "/subscriptions/x/resourceGroups/y/providers/microsoft.communication/c/z",
        "data": data,
        "eventType": "Microsoft.Communication.SMSDeliveryReportReceived",
        "dataVersion": "1.0",
        "metadataVersion": "1",
        "eventTime": "2020-09-18T00:22:20Z",
    }


async def twilio_inbound(
    api: httpx.AsyncClient, body: str, *, token: str = TWILIO_TOKEN, sid: str | None = None
) -> Any:
    """POST a signed inbound message as Twilio does; each has its own MessageSid unless given."""
    form = {
        "AccountSid": TWILIO_SID,
        "From": PHONE,
        "To": OUR_NUMBER,
        "Body": body,
        "MessageSid": sid or "SM" + uuid.uuid4().hex,
        "SmsStatus": "received",
        "NumSegments": "1",
    }
    return await api.post(
        "/webhooks/twilio/inbound",
        content=urlencode(form),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": signature(INBOUND_URL, list(form.items()), token),
        },
    )


def acs_inbound(body: str, message_id: str | None = None) -> dict[str, Any]:
    """An Event Grid SMSReceived event (the sample in the ACS docs); each has its own id."""
    message_id = message_id or f"Incoming_{uuid.uuid4().hex}"
    return {
        "id": message_id,
        "subject": "/phonenumber/15555555555",
        "topic": "/subscriptions/x",
        "eventType": "Microsoft.Communication.SMSReceived",
        "data": {
            "MessageId": message_id,
            "From": PHONE[1:],
            "To": "18005550100",
            "Message": body,
            "ReceivedTimestamp": "2020-09-18T00:27:45.32Z",
        },
        "dataVersion": "1.0",
        "metadataVersion": "1",
        "eventTime": "2020-09-18T00:27:47Z",
    }
