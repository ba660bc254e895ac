"""/challenge through real provider wire formats, against local fake providers."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.delivery import (
    ACS_FROM,
    FAST_RETRIES,
    TIMEOUT,
    TWILIO_FROM,
    StartApi,
    acs_entry,
    code_in,
    delivered_to,
    delivery,
    gateway_entry,
    issue,
    twilio_entry,
    verify,
)
from tests.support.helpers import PHONE, wait_until
from tests.support.servers.providers import FakeAcs, FakeGateway, FakeTwilio, Planned
from tests.support.servers.redis import free_port


@pytest.mark.parametrize("provider", ["acs", "twilio", "generic"])
async def test_a_code_sent_through_each_provider_arrives_signed_and_verifies(
    provider: str,
    start_api: StartApi,
    acs: FakeAcs,
    twilio: FakeTwilio,
    gateway: FakeGateway,
) -> None:
    entries = {
        "acs": (acs_entry(acs), acs),
        "twilio": (twilio_entry(twilio), twilio),
        "generic": (gateway_entry(gateway), gateway),
    }
    entry, server = entries[provider]
    api = await start_api(entry)
    challenge_id = await issue(api)
    state = await delivery(api, challenge_id)
    assert server.refused == []  # the signature / credentials checked out
    assert [m.to for m in server.delivered] == [PHONE]
    assert state["status"] == "sent"
    assert state["provider"] == provider
    assert state["message_id"]
    assert state["sent_at"] is not None
    assert (await verify(api, challenge_id, code_in(server))).status_code == 200


async def test_each_provider_gets_what_its_api_needs(
    start_api: StartApi, acs: FakeAcs, twilio: FakeTwilio, gateway: FakeGateway
) -> None:
    challenge_ids = []
    for n, entry in enumerate((acs_entry(acs), twilio_entry(twilio), gateway_entry(gateway))):
        api = await start_api(entry, redis={"key_prefix": f"app{n}"})  # separate outboxes
        challenge_ids.append(await issue(api, f"+1415555010{n}"))
        await delivery(api, challenge_ids[-1])
    acs_body = acs.delivered[0].fields
    assert acs_body["from"] == ACS_FROM
    assert acs_body["smsSendOptions"]["tag"] == challenge_ids[0]
    form = twilio.delivered[0].fields
    assert form["From"] == TWILIO_FROM
    assert form["StatusCallback"] == (
        f"https://otp.example.com/webhooks/twilio/status?challenge_id={challenge_ids[1]}"
    )
    sent = gateway.delivered[0]
    assert sent.fields["type"] == "sms.send"
    assert sent.fields["challenge_id"] == challenge_ids[2]
    assert sent.headers["webhook-id"] == sent.fields["id"]


async def test_twilio_can_send_through_a_messaging_service(
    start_api: StartApi, twilio: FakeTwilio
) -> None:
    service_sid = "MG" + "a" * 32
    api = await start_api(twilio_entry(twilio, from_number=None, messaging_service_sid=service_sid))
    await delivery(api, await issue(api))
    assert twilio.delivered[0].fields["MessagingServiceSid"] == service_sid
    assert "From" not in twilio.delivered[0].fields


async def test_a_failed_recipient_inside_an_acs_202_fails_the_delivery(
    start_api: StartApi, acs: FakeAcs
) -> None:
    acs.plan = [Planned("refuse", error_code=400)]
    api = await start_api(acs_entry(acs))
    state = await delivery(api, await issue(api))
    assert state["status"] == "failed"
    assert state["provider"] == "acs"
    assert acs.delivered == []


@pytest.mark.parametrize(
    ("error_code", "detail"), [(21610, "opted_out"), (21211, "invalid_number")]
)
async def test_twilio_number_errors_are_final_and_not_failed_over(
    start_api: StartApi, twilio: FakeTwilio, acs: FakeAcs, error_code: int, detail: str
) -> None:
    twilio.plan = [Planned("refuse", error_code=error_code)]
    api = await start_api(twilio_entry(twilio), acs_entry(acs))
    state = await delivery(api, await issue(api))
    assert (state["status"], state["provider"], state["detail"]) == ("failed", "twilio", detail)
    assert acs.received == []  # another provider would not help


@pytest.mark.parametrize("failure", ["error", "busy", "refused_connection", "bad_credentials"])
async def test_a_provider_that_certainly_failed_is_followed_by_the_next(
    start_api: StartApi, twilio: FakeTwilio, acs: FakeAcs, failure: str
) -> None:
    first = twilio_entry(twilio)
    if failure == "refused_connection":
        first = twilio_entry(f"http://127.0.0.1:{free_port()}")
    elif failure == "bad_credentials":
        first = twilio_entry(twilio, auth_token="not-the-token")
    else:
        twilio.plan = [Planned(failure)]
    api = await start_api(first, acs_entry(acs))
    challenge_id = await issue(api)
    assert await delivered_to(acs) == [PHONE]
    assert twilio.delivered == []
    assert (await delivery(api, challenge_id))["provider"] == "acs"
    assert (await verify(api, challenge_id, code_in(acs))).status_code == 200


async def test_when_no_provider_takes_it_the_message_is_retried_after_the_providers_retry_after(
    start_api: StartApi, twilio: FakeTwilio
) -> None:
    twilio.plan = [Planned("busy", retry_after="1")]
    api = await start_api(twilio_entry(twilio), outbox=FAST_RETRIES)
    challenge_id = await issue(api)
    await asyncio.sleep(0.3)
    assert (await api.get(f"/challenge/{challenge_id}")).json()["delivery"]["status"] == "retrying"
    assert await delivered_to(twilio) == [PHONE]
    assert len(twilio.received) == 2
    assert (await delivery(api, challenge_id))["status"] == "sent"


async def test_a_twilio_timeout_is_unknown_and_never_sent_again(
    start_api: StartApi, twilio: FakeTwilio, acs: FakeAcs
) -> None:
    # Twilio took the message but answered too late: the code is on its way.
    twilio.plan = [Planned("late", delay=TIMEOUT * 3)]
    api = await start_api(twilio_entry(twilio), acs_entry(acs))
    challenge_id = await issue(api)
    state = await delivery(api, challenge_id)
    assert (state["status"], state["provider"]) == ("unknown", "twilio")
    assert acs.received == []  # no second provider, no second code
    assert len(twilio.received) == 1
    assert (await verify(api, challenge_id, code_in(twilio))).status_code == 200


async def test_an_acs_timeout_is_retried_and_acs_drops_the_repeat(
    start_api: StartApi, acs: FakeAcs
) -> None:
    acs.plan = [Planned("late", delay=TIMEOUT * 3)]
    api = await start_api(acs_entry(acs), outbox=FAST_RETRIES)
    challenge_id = await issue(api)
    await wait_until(lambda: len(acs.received) >= 2)
    state = await delivery(api, challenge_id)
    assert state["status"] == "sent"
    assert len(acs.received) == 2  # the repeat reached ACS ...
    assert len(acs.delivered) == 1  # ... and was dropped there: one SMS
    first, repeat = acs.received
    assert first.fields["smsRecipients"] == repeat.fields["smsRecipients"]


async def test_the_circuit_opens_after_repeated_failures_and_skips_the_provider(
    start_api: StartApi, twilio: FakeTwilio, acs: FakeAcs
) -> None:
    twilio.plan = [Planned("error")] * 10
    api = await start_api(
        twilio_entry(twilio),
        acs_entry(acs),
        sms={"breaker_failures": 2, "breaker_seconds": 60},
    )
    for n in range(4):
        await delivery(api, await issue(api, f"+1415555{n:04d}"))
    assert len(twilio.received) == 2  # then its circuit was open
    assert len(acs.delivered) == 4
