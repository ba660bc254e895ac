"""Keyword answers and the whole STOP / START story, through each provider's webhook."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from otpservice.config.schema import KeywordReplyTexts
from tests.support.delivery import (
    QUEUE_SHARDS,
    StartApi,
    acs_entry,
    delivered_to,
    issue,
    queue_keys,
    twilio_entry,
)
from tests.support.events import received, with_events
from tests.support.helpers import PHONE, assert_problem, wait_until
from tests.support.servers.providers import FakeAcs, FakeApp, FakeProvider, FakeTwilio, Planned
from tests.support.webhooks import HEADERS, SECRET, acs_inbound, twilio_inbound

STOP_TEXT = (
    "You have successfully been unsubscribed to messages from this number. "
    "Reply START to resubscribe."
)
START_TEXT = (
    "You have successfully been re-subscribed to messages from this number. "
    "Reply STOP to unsubscribe."
)
NO_INTERVAL = {"min_interval_seconds": 0}
Reply = Callable[[httpx.AsyncClient, str], Awaitable[httpx.Response]]


def test_the_default_answers_are_the_standard_texts() -> None:
    texts = KeywordReplyTexts()
    assert (texts.opt_out, texts.opt_in) == (STOP_TEXT, START_TEXT)


async def acs_reply(api: httpx.AsyncClient, body: str) -> httpx.Response:
    return await api.post("/webhooks/acs", json=[acs_inbound(body)], headers=HEADERS)


@pytest.fixture(params=["twilio", "acs"])
def provider(
    request: pytest.FixtureRequest, twilio: FakeTwilio, acs: FakeAcs
) -> Iterator[tuple[FakeProvider, Callable[..., dict[str, Any]], Reply]]:
    if request.param == "twilio":
        yield twilio, lambda **extra: twilio_entry(twilio, **extra), twilio_inbound
    else:
        yield acs, lambda **extra: acs_entry(acs, **extra), acs_reply


async def bodies_to(server: FakeProvider, phone: str, count: int) -> list[str]:
    """What ``phone`` received, once it has ``count`` messages (5 s at most)."""
    await wait_until(lambda: sum(m.to == phone for m in server.delivered) >= count)
    return [m.body for m in server.delivered if m.to == phone]


@pytest.mark.parametrize("mode", ["service", "provider"])
async def test_stop_and_start_from_a_fresh_start(
    start_api: StartApi,
    provider: tuple[FakeProvider, Callable[..., dict[str, Any]], Reply],
    app_endpoint: FakeApp,
    redis: Redis,
    mode: str,
) -> None:
    server, entry, reply = provider
    api = await start_api(
        entry(keyword_replies=mode), send_limits=NO_INTERVAL, **with_events(app_endpoint)
    )
    await issue(api)
    await delivered_to(server)

    assert (await reply(api, "STOP")).status_code == 200
    if mode == "service":
        # The confirmation goes out although the number has just opted out.
        assert (await bodies_to(server, PHONE, 2))[1] == STOP_TEXT
    assert_problem(await api.post("/challenge", json={"phone": PHONE}), 403, "recipient_opted_out")

    assert (await reply(api, "START")).status_code == 200
    if mode == "service":
        assert (await bodies_to(server, PHONE, 3))[2] == START_TEXT
    await issue(api)
    texts = await bodies_to(server, PHONE, 4 if mode == "service" else 2)
    await asyncio.sleep(0.3)  # time for anything else to (wrongly) go out
    assert [m.body for m in server.delivered if m.to == PHONE] == texts
    expected = [STOP_TEXT, START_TEXT] if mode == "service" else []
    assert [t for t in texts if "code" not in t] == expected
    if mode == "provider":
        # Nothing was ever queued to answer (the stream exists: the worker waits on it).
        added = [(await redis.xinfo_stream(key))["entries-added"] for key in queue_keys("replies")]
        assert added == [0] * QUEUE_SHARDS

    kinds = await received(app_endpoint, 4)
    assert sorted(kinds) == ["inbound.message"] * 2 + ["optout.changed"] * 2
    assert app_endpoint.refused == []  # every signature checked out
    changes = [m.fields["data"] for m in app_endpoint.delivered if m.body == "optout.changed"]
    assert sorted(c["opted_out"] for c in changes) == [False, True]


async def test_stop_sent_twice_gets_one_answer_and_help_gets_the_help_text(
    start_api: StartApi, twilio: FakeTwilio
) -> None:
    api = await start_api(twilio_entry(twilio, keyword_replies="service"), sms={"app_name": "Acme"})
    for body in ("STOP", "stop", "HELP"):
        assert (await twilio_inbound(api, body)).status_code == 200
    texts = await bodies_to(twilio, PHONE, 2)
    await asyncio.sleep(0.3)
    assert [m.body for m in twilio.delivered] == texts
    assert sorted(texts) == sorted(
        [STOP_TEXT, "Acme: sign-in codes. Reply STOP to unsubscribe. Msg&data rates may apply."]
    )
    # The answers went from the number the person wrote to.
    assert {m.fields["From"] for m in twilio.delivered} == {"+15005550006"}


async def test_an_answer_the_provider_did_not_take_is_retried(
    start_api: StartApi, acs: FakeAcs
) -> None:
    acs.plan = [Planned("busy", retry_after="0"), Planned("error")]
    api = await start_api(
        acs_entry(acs, keyword_replies="service"),
        outbox={"retry_base_seconds": 0.05, "retry_max_seconds": 0.1},
        secrets={"acs_webhook_secret": SECRET},
    )
    assert (await acs_reply(api, "START")).status_code == 200
    assert await bodies_to(acs, PHONE, 1) == [START_TEXT]
    assert len(acs.received) == 3  # 429, 500, then taken


async def test_a_repeated_reply_changes_nothing_more(
    start_api: StartApi, twilio: FakeTwilio, app_endpoint: FakeApp
) -> None:
    api = await start_api(twilio_entry(twilio), **with_events(app_endpoint))
    stop_sid = "SM" + "5" * 32
    assert (await twilio_inbound(api, "STOP", sid=stop_sid)).status_code == 200
    assert (await twilio_inbound(api, "START")).status_code == 200
    await received(app_endpoint, 4)
    # The provider repeats the STOP after the START: the number stays opted in.
    assert (await twilio_inbound(api, "STOP", sid=stop_sid)).status_code == 200
    await asyncio.sleep(0.3)
    assert (await api.get(f"/opt-outs/{PHONE}")).json()["opted_out"] is False
    assert len(app_endpoint.delivered) == 4


@pytest.mark.parametrize(
    ("body", "opted_out"),
    [
        ("STOP", True),
        ("stop", True),
        ("  Stop \n", True),
        ("opt out", True),
        ("Unsubscribe", True),
        ("HELP", False),
        ("please stop texting me", False),
        ("STOP.", False),
        ("Thanks", False),
    ],
)
async def test_sample_replies_through_both_webhooks(
    start_api: StartApi, twilio: FakeTwilio, acs: FakeAcs, body: str, opted_out: bool
) -> None:
    api = await start_api(
        acs_entry(acs), twilio_entry(twilio), secrets={"acs_webhook_secret": SECRET}
    )
    for reply in (acs_reply, twilio_inbound):
        await api.delete(f"/opt-outs/{PHONE}")
        assert (await reply(api, body)).status_code == 200
        assert (await api.get(f"/opt-outs/{PHONE}")).json()["opted_out"] is opted_out


async def test_no_answer_goes_out_from_a_number_that_is_not_ours(
    start_api: StartApi, acs: FakeAcs
) -> None:
    api = await start_api(
        acs_entry(acs, keyword_replies="service"), secrets={"acs_webhook_secret": SECRET}
    )
    event = acs_inbound("STOP")
    event["data"]["To"] = "18005550199"  # another ACS number, not in our config
    assert (await api.post("/webhooks/acs", json=[event], headers=HEADERS)).status_code == 200
    assert (await api.get(f"/opt-outs/{PHONE}")).json()["opted_out"] is True
    await asyncio.sleep(0.3)
    assert acs.received == []


async def test_the_same_reply_delivered_twice_at_once_is_handled_once(
    start_api: StartApi, acs: FakeAcs, redis: Redis
) -> None:
    api = await start_api(
        acs_entry(acs, keyword_replies="service"), secrets={"acs_webhook_secret": SECRET}
    )
    event = acs_inbound("STOP")
    responses = await asyncio.gather(
        *(api.post("/webhooks/acs", json=[event], headers=HEADERS) for _ in range(5))
    )
    assert {r.status_code for r in responses} == {200}
    assert await bodies_to(acs, PHONE, 1) == [STOP_TEXT]
    kinds = [f[b"type"] for _, f in await redis.xrange("otp:{events}:feed")]
    assert sorted(kinds) == [b"inbound.message", b"optout.changed"]


async def test_every_opt_out_change_is_kept_with_its_source_and_time(
    start_api: StartApi, twilio: FakeTwilio
) -> None:
    api = await start_api(twilio_entry(twilio))
    assert (await twilio_inbound(api, "STOP")).status_code == 200
    assert (await twilio_inbound(api, "START")).status_code == 200
    assert (await api.put(f"/opt-outs/{PHONE}")).status_code == 200
    record = (await api.get(f"/opt-outs/{PHONE}")).json()
    assert record["opted_out"] is True
    assert [(c["opted_out"], c["source"], c["sender"]) for c in record["history"]] == [
        (True, "admin", None),
        (False, "keyword", None),
        (True, "keyword", "+15005550006"),
    ]
    times = [datetime.fromisoformat(c["at"]) for c in record["history"]]
    assert times == sorted(times, reverse=True)
