"""Delivery reports: ACS through Event Grid (both schemas) and Twilio status callbacks."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import pytest

from otpservice.sms.twilio import signature, signature_is_valid
from tests.support.delivery import StartApi, acs_entry, delivery, issue, twilio_entry
from tests.support.helpers import assert_problem
from tests.support.servers.providers import TWILIO_SID, TWILIO_TOKEN, FakeAcs, FakeTwilio
from tests.support.webhooks import HEADERS, SECRET, acs_report

SDK_PARAMS = [
    ("CallSid", "CA1234567890ABCDE"),
    ("Caller", "+14158675309"),
    ("Digits", "1234"),
    ("From", "+14158675309"),
    ("To", "+18005551212"),
]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://mycompany.com/myapp.php?foo=1&bar=2", "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
        ("https://mycompany.com:443/myapp.php?foo=1&bar=2", "kvajT1Ptam85bY51eRf/AJRuM3w="),
        ("http://mycompany.com:80/myapp.php?foo=1&bar=2", "0ZXoZLH/DfblKGATFgpif+LLRf4="),
    ],
)
def test_twilio_signature_matches_the_sdk_test_vectors(url: str, expected: str) -> None:
    assert signature(url, SDK_PARAMS, "12345") == expected


def test_twilio_signature_sorts_repeated_keys_and_accepts_either_port_form() -> None:
    params = [("Sid", "CA123"), ("SidAccount", "AC123"), ("Digits", "5678"), ("Digits", "1234")]
    assert signature("https://mycompany.com/myapp.php?foo=1&bar=2", params, "12345") == (
        "IK+Dwps556ElfBT0I3Rgjkr1wJU="
    )
    url = "https://mycompany.com:1234/myapp.php?foo=1&bar=2"
    assert signature_is_valid(url, SDK_PARAMS, "RSOYDt4T1cUTdK1PDd93/VVr8B8=", "12345")
    assert not signature_is_valid(url, SDK_PARAMS, "RSOYDt4T1cUTdK1PDd93/VVr8B8=", "54321")


def test_twilio_status_callback_vector() -> None:
    params = {
        "AccountSid": "AC00000000000000000000000000000000",
        "ApiVersion": "2010-04-01",
        "From": "+15005550006",
        "MessageSid": "SM11111111111111111111111111111111",
        "MessageStatus": "delivered",
        "SmsSid": "SM11111111111111111111111111111111",
        "SmsStatus": "delivered",
        "To": "+14155550123",
    }
    url = "https://otp.example.com/webhooks/twilio/status?tenant=acme"
    token = "0123456789abcdef0123456789abcdef"
    assert signature(url, list(params.items()), token) == "mqzKMHyfj6ZNBaXNnKLSsLRi7Zw="


async def twilio_callback(
    api: httpx.AsyncClient,
    callback_url: str,
    status: str,
    *,
    token: str = TWILIO_TOKEN,
    **extra: str,
) -> httpx.Response:
    """POST a status callback the way Twilio does: to the URL it was given, signed."""
    form = {
        "AccountSid": TWILIO_SID,
        "MessageSid": "SM" + "1" * 32,
        "MessageStatus": status,
        "SmsStatus": status,
        "ApiVersion": "2010-04-01",
        **extra,
    }
    parts = urlsplit(callback_url)
    return await api.post(
        f"{parts.path}?{parts.query}",
        content=urlencode(form),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": signature(callback_url, list(form.items()), token),
        },
    )


async def test_twilio_status_callbacks_move_the_delivery_forward_only(
    start_api: StartApi, twilio: FakeTwilio
) -> None:
    api = await start_api(twilio_entry(twilio))
    challenge_id = await issue(api)
    assert (await delivery(api, challenge_id))["status"] == "sent"
    callback = twilio.delivered[0].fields["StatusCallback"]
    assert callback.startswith("https://otp.example.com/webhooks/twilio/status?challenge_id=")
    assert (await twilio_callback(api, callback, "delivered")).status_code == 204
    state = await delivery(api, challenge_id)
    assert state["status"] == "delivered"
    # Late, repeated and out-of-order callbacks change nothing.
    for late in ("sent", "queued", "delivered", "failed"):
        assert (await twilio_callback(api, callback, late)).status_code == 204
    again = await delivery(api, challenge_id)
    assert (again["status"], again["updated_at"]) == ("delivered", state["updated_at"])


async def test_an_undelivered_callback_records_the_error_code(
    start_api: StartApi, twilio: FakeTwilio
) -> None:
    api = await start_api(twilio_entry(twilio))
    challenge_id = await issue(api)
    await delivery(api, challenge_id)
    callback = twilio.delivered[0].fields["StatusCallback"]
    response = await twilio_callback(api, callback, "undelivered", ErrorCode="30003")
    assert response.status_code == 204
    state = await delivery(api, challenge_id)
    assert (state["status"], state["detail"]) == ("undelivered", "error 30003")


@pytest.mark.parametrize(
    "forgery", ["wrong_token", "no_signature", "other_challenge", "non_ascii_signature"]
)
async def test_a_forged_twilio_callback_is_403_and_changes_nothing(
    start_api: StartApi, twilio: FakeTwilio, forgery: str
) -> None:
    api = await start_api(twilio_entry(twilio), send_limits={"min_interval_seconds": 0})
    challenge_id = await issue(api)
    await delivery(api, challenge_id)
    callback = twilio.delivered[0].fields["StatusCallback"]
    if forgery == "wrong_token":
        response = await twilio_callback(api, callback, "failed", token="not-the-token")
    elif forgery == "non_ascii_signature":
        path = urlsplit(callback)
        response = await api.post(
            f"{path.path}?{path.query}",
            content=urlencode({"AccountSid": TWILIO_SID, "MessageStatus": "failed"}),
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Twilio-Signature": "é".encode("latin-1"),
            },
        )
    elif forgery == "no_signature":
        path = urlsplit(callback)
        response = await api.post(
            f"{path.path}?{path.query}",
            content=urlencode({"AccountSid": TWILIO_SID, "MessageStatus": "failed"}),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    else:
        # A valid signature for one challenge, replayed against another's URL.
        other = await issue(api)
        signed = await twilio_callback(api, callback, "failed")
        assert signed.status_code == 204
        challenge_id = other
        response = await api.post(
            f"/webhooks/twilio/status?challenge_id={other}",
            content=signed.request.content,
            headers=dict(signed.request.headers),
        )
    assert_problem(response, 403, "forbidden")
    assert (await delivery(api, challenge_id))["status"] == "sent"


def as_cloud_event(event: dict[str, Any]) -> dict[str, Any]:
    return {
        "source": event["topic"],
        "subject": event["subject"],
        "type": event["eventType"],
        "time": event["eventTime"],
        "id": event["id"],
        "data": event["data"],
        "specversion": "1.0",
    }


@pytest.mark.parametrize("shape", ["event_grid_pascal", "event_grid_camel", "cloud_event"])
async def test_acs_delivery_reports_in_either_schema_and_casing(
    start_api: StartApi, acs: FakeAcs, shape: str
) -> None:
    api = await start_api(acs_entry(acs), secrets={"acs_webhook_secret": SECRET})
    challenge_id = await issue(api)
    assert (await delivery(api, challenge_id))["status"] == "sent"
    event = acs_report(challenge_id, "Delivered", camel=shape == "event_grid_camel")
    if shape == "cloud_event":
        response = await api.post(
            "/webhooks/acs",
            content=httpx.Request("POST", "/", json=as_cloud_event(event)).content,
            headers={**HEADERS, "Content-Type": "application/cloudevents+json; charset=utf-8"},
        )
    else:
        response = await api.post("/webhooks/acs", json=[event], headers=HEADERS)
    assert response.status_code == 200, response.text
    state = await delivery(api, challenge_id)
    assert (state["status"], state["provider"]) == ("delivered", "acs")
    # Event Grid delivers at least once, and a "failed" after "delivered" is stale.
    for late in ("Delivered", "Failed"):
        assert (
            await api.post("/webhooks/acs", json=[acs_report(challenge_id, late)], headers=HEADERS)
        ).status_code == 200
    assert (await delivery(api, challenge_id))["status"] == "delivered"


async def test_a_failed_acs_report_fails_the_delivery_with_its_details(
    start_api: StartApi, acs: FakeAcs
) -> None:
    api = await start_api(acs_entry(acs), secrets={"acs_webhook_secret": SECRET})
    challenge_id = await issue(api)
    await delivery(api, challenge_id)
    event = acs_report(challenge_id, "Failed")
    event["data"]["DeliveryStatusDetails"] = "Sender blocked for given recipient."
    # The secret may also come as a query parameter.
    response = await api.post(f"/webhooks/acs?secret={SECRET}", json=[event])
    assert response.status_code == 200
    state = await delivery(api, challenge_id)
    assert (state["status"], state["detail"]) == ("failed", "Sender blocked for given recipient.")


async def test_event_grid_subscription_validation_in_both_schemas(
    start_api: StartApi, acs: FakeAcs
) -> None:
    api = await start_api(acs_entry(acs), secrets={"acs_webhook_secret": SECRET})
    validation = [
        {
            "id": "2d1781af",
            "topic": "/subscriptions/x",
            "subject": "",
            "data": {
                "validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6",
                "validationUrl": "https://rp-eastus2.eventgrid.azure.net:553/validate",
            },
            "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
            "eventTime": "2022-10-28T04:23:35.1981776Z",
            "metadataVersion": "1",
            "dataVersion": "1",
        }
    ]
    response = await api.post(
        "/webhooks/acs",
        json=validation,
        headers={**HEADERS, "aeg-event-type": "SubscriptionValidation"},
    )
    assert response.status_code == 200
    assert response.json() == {"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}
    handshake = await api.options(
        "/webhooks/acs", headers={"WebHook-Request-Origin": "eventgrid.azure.net"}
    )
    assert handshake.status_code == 200
    assert handshake.headers["webhook-allowed-origin"] == "eventgrid.azure.net"
    assert handshake.headers["webhook-allowed-rate"] == "*"


@pytest.mark.parametrize("sent", [None, "not-the-secret"])
async def test_acs_events_without_the_secret_are_401_and_change_nothing(
    start_api: StartApi, acs: FakeAcs, sent: str | None
) -> None:
    api = await start_api(acs_entry(acs), secrets={"acs_webhook_secret": SECRET})
    challenge_id = await issue(api)
    await delivery(api, challenge_id)
    headers = {"X-Webhook-Secret": sent} if sent else {}
    response = await api.post(
        "/webhooks/acs", json=[acs_report(challenge_id, "Failed")], headers=headers
    )
    assert_problem(response, 401, "unauthorized")
    assert (await delivery(api, challenge_id))["status"] == "sent"


async def test_malformed_acs_events_are_400(start_api: StartApi, acs: FakeAcs) -> None:
    api = await start_api(acs_entry(acs), secrets={"acs_webhook_secret": SECRET})
    for body in (b"not json", b"[1, 2]", b'[{"data": {}}]'):
        response = await api.post("/webhooks/acs", content=body, headers=HEADERS)
        assert_problem(response, 400, "invalid_request")
