"""/challenge through real provider wire formats, against local fake providers."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from otpservice.app import create_app
from otpservice.settings import Settings
from tests.conftest import running
from tests.helpers import PHONE, assert_problem
from tests.servers.providers import (
    GATEWAY_SECRET,
    TWILIO_SID,
    TWILIO_TOKEN,
    FakeAcs,
    FakeGateway,
    FakeProvider,
    FakeTwilio,
    Planned,
)
from tests.servers.redis import RedisServer, free_port

ACS_FROM = "+18005550100"
TWILIO_FROM = "+15005550006"
TIMEOUT = 0.5

StartApi = Callable[..., Awaitable[httpx.AsyncClient]]


@pytest.fixture
def acs() -> Iterator[FakeAcs]:
    server = FakeAcs()
    yield server
    server.close()


@pytest.fixture
def twilio() -> Iterator[FakeTwilio]:
    server = FakeTwilio()
    yield server
    server.close()


@pytest.fixture
def gateway() -> Iterator[FakeGateway]:
    server = FakeGateway()
    yield server
    server.close()


def acs_entry(server: FakeAcs, **extra: Any) -> dict[str, Any]:
    return {
        "type": "acs", "connection_string": server.connection_string, "from_number": ACS_FROM,
        "timeout_seconds": TIMEOUT, **extra,
    }  # fmt: skip


def twilio_entry(server: FakeTwilio | str, **extra: Any) -> dict[str, Any]:
    url = server if isinstance(server, str) else server.url
    return {
        "type": "twilio", "account_sid": TWILIO_SID, "auth_token": TWILIO_TOKEN,
        "from_number": TWILIO_FROM, "api_base_url": url, "timeout_seconds": TIMEOUT, **extra,
    }  # fmt: skip


def gateway_entry(server: FakeGateway, **extra: Any) -> dict[str, Any]:
    return {
        "type": "generic", "url": f"{server.url}/send", "secret": GATEWAY_SECRET,
        "timeout_seconds": TIMEOUT, **extra,
    }  # fmt: skip


@pytest.fixture
async def start_api(
    redis: Redis, redis_server: RedisServer, make_settings: Callable[..., Settings]
) -> AsyncIterator[StartApi]:
    """Apps whose SMS go through the providers given (as config entries)."""
    async with AsyncExitStack() as stack:

        async def start(
            *providers: dict[str, Any], sms: dict[str, Any] | None = None, **overrides: Any
        ) -> httpx.AsyncClient:
            settings = make_settings(
                redis_server.url,
                sms={**(sms or {}), "providers": list(providers)},
                public_base_url="https://otp.example.com",
                **overrides,
            )
            app = create_app(settings, redis=redis)
            return await stack.enter_async_context(running(app))

        yield start


def code_in(server: FakeProvider) -> str:
    match = re.search(r"\b(\d{6})\b", server.delivered[-1].body)
    assert match, server.delivered[-1].body
    return match.group(1)


async def verify(api: httpx.AsyncClient, challenge_id: str, code: str) -> httpx.Response:
    return await api.post("/verify", json={"challenge_id": challenge_id, "code": code})


@pytest.mark.parametrize("provider", ["acs", "twilio", "generic"])
async def test_a_code_sent_through_each_provider_arrives_signed_and_verifies(
    provider: str,
    start_api: StartApi,
    acs: FakeAcs,
    twilio: FakeTwilio,
    gateway: FakeGateway,
) -> None:
    entries = {"acs": (acs_entry(acs), acs), "twilio": (twilio_entry(twilio), twilio),
               "generic": (gateway_entry(gateway), gateway)}  # fmt: skip
    entry, server = entries[provider]
    api = await start_api(entry)
    response = await api.post("/challenge", json={"phone": PHONE})
    assert response.status_code == 201, response.text
    challenge_id = response.json()["challenge_id"]
    assert server.refused == []  # the signature / credentials checked out
    assert [m.to for m in server.delivered] == [PHONE]
    assert (await verify(api, challenge_id, code_in(server))).status_code == 200


async def test_each_provider_gets_what_its_api_needs(
    start_api: StartApi, acs: FakeAcs, twilio: FakeTwilio, gateway: FakeGateway
) -> None:
    challenge_ids = []
    for n, entry in enumerate((acs_entry(acs), twilio_entry(twilio), gateway_entry(gateway))):
        api = await start_api(entry)
        response = await api.post("/challenge", json={"phone": f"+1415555010{n}"})
        assert response.status_code == 201, response.text
        challenge_ids.append(response.json()["challenge_id"])
    acs_body = acs.delivered[0].fields
    assert acs_body["from"] == ACS_FROM
    assert acs_body["smsSendOptions"]["tag"] == challenge_ids[0]
    form = twilio.delivered[0].fields
    assert form["From"] == TWILIO_FROM
    assert form["StatusCallback"] == "https://otp.example.com/webhooks/twilio/status"
    sent = gateway.delivered[0]
    assert sent.fields["type"] == "sms.send"
    assert sent.fields["challenge_id"] == challenge_ids[2]
    assert sent.headers["webhook-id"] == sent.fields["id"]


async def test_twilio_can_send_through_a_messaging_service(
    start_api: StartApi, twilio: FakeTwilio
) -> None:
    service_sid = "MG" + "a" * 32
    api = await start_api(twilio_entry(twilio, from_number=None, messaging_service_sid=service_sid))
    assert (await api.post("/challenge", json={"phone": PHONE})).status_code == 201
    assert twilio.delivered[0].fields["MessagingServiceSid"] == service_sid
    assert "From" not in twilio.delivered[0].fields


async def test_a_failed_recipient_inside_an_acs_202_is_undeliverable_and_cancels_the_code(
    start_api: StartApi, acs: FakeAcs, redis: Redis
) -> None:
    acs.plan = [Planned("refuse", error_code=400)]
    api = await start_api(acs_entry(acs))
    response = await api.post("/challenge", json={"phone": PHONE})
    assert_problem(response, 422, "phone_undeliverable")
    assert acs.delivered == []


@pytest.mark.parametrize(
    ("error_code", "status", "problem"),
    [(21610, 403, "recipient_opted_out"), (21211, 422, "phone_undeliverable")],
)
async def test_twilio_number_errors_are_final_and_not_failed_over(
    start_api: StartApi,
    twilio: FakeTwilio,
    acs: FakeAcs,
    error_code: int,
    status: int,
    problem: str,
) -> None:
    twilio.plan = [Planned("refuse", error_code=error_code)]
    api = await start_api(twilio_entry(twilio), acs_entry(acs))
    body = assert_problem(await api.post("/challenge", json={"phone": PHONE}), status, problem)
    assert PHONE not in body["detail"]
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
    response = await api.post("/challenge", json={"phone": PHONE})
    assert response.status_code == 201, response.text
    assert twilio.delivered == []
    assert [m.to for m in acs.delivered] == [PHONE]
    assert (await verify(api, response.json()["challenge_id"], code_in(acs))).status_code == 200


async def test_when_no_provider_takes_it_the_answer_is_503_with_the_providers_retry_after(
    start_api: StartApi, twilio: FakeTwilio
) -> None:
    twilio.plan = [Planned("busy", retry_after="7")]
    api = await start_api(twilio_entry(twilio))
    response = await api.post("/challenge", json={"phone": PHONE})
    assert_problem(response, 503, "sender_unavailable")
    assert response.headers["retry-after"] == "7"


async def test_a_twilio_timeout_keeps_the_code_and_never_sends_it_again(
    start_api: StartApi, twilio: FakeTwilio, acs: FakeAcs
) -> None:
    # Twilio took the message but answered too late: the code is on its way.
    twilio.plan = [Planned("late", delay=TIMEOUT * 3)]
    api = await start_api(twilio_entry(twilio), acs_entry(acs))
    response = await api.post("/challenge", json={"phone": PHONE})
    assert response.status_code == 201, response.text
    assert acs.received == []  # no second provider, no second code
    assert len(twilio.received) == 1
    assert (await verify(api, response.json()["challenge_id"], code_in(twilio))).status_code == 200


async def test_the_circuit_opens_after_repeated_failures_and_skips_the_provider(
    start_api: StartApi, twilio: FakeTwilio, acs: FakeAcs
) -> None:
    twilio.plan = [Planned("error")] * 10
    api = await start_api(
        twilio_entry(twilio), acs_entry(acs),
        sms={"breaker_failures": 2, "breaker_seconds": 60},
    )  # fmt: skip
    for n in range(4):
        response = await api.post("/challenge", json={"phone": f"+1415555{n:04d}"})
        assert response.status_code == 201, response.text
    assert len(twilio.received) == 2  # then its circuit was open
    assert len(acs.delivered) == 4
