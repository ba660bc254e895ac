"""Replies: STOP and START by SMS, through Twilio and ACS, matched the way carriers match."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from otpservice.errors import StoreUnavailable
from otpservice.keywords import Keyword, match_keyword
from tests.support.delivery import StartApi, StartApp, acs_entry, twilio_entry
from tests.support.helpers import PHONE, assert_problem
from tests.support.servers.providers import FakeAcs, FakeTwilio
from tests.support.webhooks import (
    HEADERS,
    SECRET,
    acs_inbound,
    twilio_inbound,
)


@pytest.mark.parametrize(
    ("body", "keyword"),
    [
        ("STOP", Keyword.OPT_OUT),
        ("  stop \n", Keyword.OPT_OUT),
        ("Opt   Out", Keyword.OPT_OUT),
        ("unsubscribe", Keyword.OPT_OUT),
        ("revoke", Keyword.OPT_OUT),
        ("Start", Keyword.OPT_IN),
        ("UNSTOP", Keyword.OPT_IN),
        ("help", Keyword.HELP),
        ("info", Keyword.HELP),
        ("stop please", None),
        ("STOP!", None),
        ("", None),
        ("Thanks", None),
    ],
)
def test_keywords_are_the_whole_message_in_any_case(body: str, keyword: Keyword | None) -> None:
    assert match_keyword(body) == keyword


def test_configured_words_opt_out_too() -> None:
    assert match_keyword("arrete", frozenset({"ARRETE"})) == Keyword.OPT_OUT


async def test_stop_and_start_by_twilio(start_api: StartApi, twilio: FakeTwilio) -> None:
    api = await start_api(twilio_entry(twilio))
    response = await twilio_inbound(api, "Stop")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/xml")
    assert "<Response/>" in response.text
    record = (await api.get(f"/opt-outs/{PHONE}")).json()
    assert (record["opted_out"], record["source"], record["detail"]) == (True, "keyword", "Stop")
    assert_problem(await api.post("/challenge", json={"phone": PHONE}), 403, "recipient_opted_out")
    assert (await twilio_inbound(api, "START")).status_code == 200
    assert (await api.get(f"/opt-outs/{PHONE}")).json()["opted_out"] is False
    assert (await api.post("/challenge", json={"phone": PHONE})).status_code == 201


async def test_a_replayed_stop_changes_nothing_after_its_short_mark_is_gone(
    start_api: StartApi, twilio: FakeTwilio, redis: Redis
) -> None:
    # A captured, correctly signed STOP (Twilio signs no time) replayed after the user opted
    # back in and after the reply's dedupe mark has expired (deleted here, as expiry would).
    api = await start_api(twilio_entry(twilio))
    stop, start = "SM" + uuid.uuid4().hex, "SM" + uuid.uuid4().hex
    assert (await twilio_inbound(api, "STOP", sid=stop)).status_code == 200
    assert (await twilio_inbound(api, "START", sid=start)).status_code == 200
    marks = [key async for key in redis.scan_iter("otp:*:in:*")]
    assert len(marks) == 2
    await redis.delete(*marks)
    assert (await twilio_inbound(api, "STOP", sid=stop)).status_code == 200
    assert (await api.get(f"/opt-outs/{PHONE}")).json()["opted_out"] is False
    assert (await api.post("/challenge", json={"phone": PHONE})).status_code == 201
    # Nor is it a new reply for the app: the event stream has the STOP once.
    await asyncio.sleep(0.3)  # the relay's pass
    ids = [f[b"id"] async for f in _feed(redis)]
    assert ids.count(f"inbound.{stop}".encode()) == 1, ids
    # Nor does a replayed START lift a later, real STOP.
    assert (await twilio_inbound(api, "STOP")).status_code == 200
    await redis.delete(*[key async for key in redis.scan_iter("otp:*:in:*")])
    assert (await twilio_inbound(api, "START", sid=start)).status_code == 200
    assert (await api.get(f"/opt-outs/{PHONE}")).json()["opted_out"] is True
    # The service keeps digests of the message ids, never the ids themselves.
    dump = [key async for key in redis.scan_iter("otp:*")]
    assert not [key for key in dump if stop.encode() in key or start.encode() in key]
    for key in dump:
        if await redis.type(key) == b"set":
            assert not {stop.encode(), start.encode()} & await redis.smembers(key)


@pytest.mark.parametrize("failing", ["optout_changed", "inbound_message"])
async def test_a_keyword_whose_handling_failed_half_way_is_finished_by_the_repeat(
    start_app: StartApp,
    twilio: FakeTwilio,
    redis: Redis,
    monkeypatch: pytest.MonkeyPatch,
    failing: str,
) -> None:
    # The STOP is applied, then telling the app fails: the provider repeats the webhook, and
    # the repeat (a retry, not a replay) still tells the app everything, once.
    api, app = await start_app(twilio_entry(twilio))
    events = app.state.runtime.services.inbound._events
    real = getattr(events, failing)
    failures = [StoreUnavailable("the events queue is failing over")]

    async def flaky(*args: Any, **kwargs: Any) -> None:
        if failures:
            raise failures.pop()
        await real(*args, **kwargs)

    monkeypatch.setattr(events, failing, flaky)
    sid = "SM" + uuid.uuid4().hex
    assert (await twilio_inbound(api, "STOP", sid=sid)).status_code == 503
    assert (await api.get(f"/opt-outs/{PHONE}")).json()["opted_out"] is True
    assert (await twilio_inbound(api, "STOP", sid=sid)).status_code == 200
    assert (await twilio_inbound(api, "STOP", sid=sid)).status_code == 200  # handled: ignored
    await asyncio.sleep(0.3)  # the relay's pass
    # Each event once, by its id (a repeat may relay one again, with the same id: at least
    # once, as the docs say).
    entries = {(f[b"type"], f[b"id"]) async for f in _feed(redis)}
    assert sorted(kind for kind, _ in entries) == [b"inbound.message", b"optout.changed"]


async def _feed(redis: Redis) -> AsyncIterator[dict[bytes, bytes]]:
    for _, fields in await redis.xrange("otp:{events}:feed"):
        yield fields


async def test_a_forged_twilio_stop_changes_nothing(
    start_api: StartApi, twilio: FakeTwilio
) -> None:
    api = await start_api(twilio_entry(twilio))
    assert_problem(await twilio_inbound(api, "STOP", token="not-the-token"), 403, "forbidden")
    assert (await api.get(f"/opt-outs/{PHONE}")).json()["opted_out"] is False


async def test_stop_by_acs_and_ordinary_replies_change_nothing(
    start_api: StartApi, acs: FakeAcs
) -> None:
    api = await start_api(acs_entry(acs), secrets={"acs_webhook_secret": SECRET})
    ordinary = await api.post("/webhooks/acs", json=[acs_inbound("stop please")], headers=HEADERS)
    assert ordinary.status_code == 200
    assert (await api.get(f"/opt-outs/{PHONE}")).json()["opted_out"] is False
    stop = await api.post("/webhooks/acs", json=[acs_inbound("STOP")], headers=HEADERS)
    assert stop.status_code == 200
    record = (await api.get(f"/opt-outs/{PHONE}")).json()
    assert (record["opted_out"], record["source"]) == (True, "keyword")
