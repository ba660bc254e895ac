"""Personal data: the event stream apps may pull, its retention, and erasing a number."""

from __future__ import annotations

import json
import time

import pytest
from redis.asyncio import Redis

from otpservice.store.keys import KeySpace
from tests.support.app import INDEX_KEY
from tests.support.delivery import StartApi, delivered_to, issue, queue_keys, twilio_entry
from tests.support.events import with_events
from tests.support.helpers import PHONE, assert_problem, wait_until_async
from tests.support.servers.providers import FakeApp, FakeTwilio, Planned
from tests.support.webhooks import twilio_inbound

FEED = "otp:{events}:feed"
OTHER = "+14155550188"


async def feed(redis: Redis) -> list[dict[str, object]]:
    """The event stream as an app reads it."""
    entries = await redis.xrange(FEED)
    return [
        {k.decode(): json.loads(v) if k == b"data" else v.decode() for k, v in fields.items()}
        for _, fields in entries
    ]


async def feed_of(redis: Redis, count: int) -> list[dict[str, object]]:
    """The event stream once the relay has appended ``count`` entries (5 s at most)."""
    return await wait_until_async(lambda: feed(redis), lambda entries: len(entries) >= count)


async def test_every_event_can_be_pulled_from_the_stream(
    start_api: StartApi, twilio: FakeTwilio, redis: Redis
) -> None:
    api = await start_api(twilio_entry(twilio))  # no callback URL: pulling only
    assert (await twilio_inbound(api, "STOP")).status_code == 200
    # Appended by the relay as it takes them from the queue's shards: in no promised order.
    events = sorted(await feed_of(redis, 2), key=lambda e: str(e["type"]), reverse=True)
    assert [e["type"] for e in events] == ["optout.changed", "inbound.message"]
    changed, message = events
    assert changed["data"] == {"phone": PHONE, "opted_out": True, "source": "keyword"}
    assert message["data"]["keyword"] == "opt_out"  # type: ignore[index]
    assert str(message["id"]).startswith("inbound.")
    assert str(message["timestamp"]).endswith("Z")


@pytest.mark.parametrize("feed_bodies", [False, True])
async def test_reply_texts_are_kept_in_the_stream_only_when_asked(
    start_api: StartApi, twilio: FakeTwilio, redis: Redis, feed_bodies: bool
) -> None:
    # What people write back is theirs; an app that pulls needs who replied and the keyword.
    api = await start_api(twilio_entry(twilio), events={"feed_bodies": feed_bodies})
    assert (await twilio_inbound(api, "call me on 0207 946 0000")).status_code == 200
    [message] = await feed_of(redis, 1)
    data: dict[str, object] = message["data"]  # type: ignore[assignment]
    assert (data["from"], data["keyword"]) == (PHONE, None)
    raw = b"".join(v for _, f in await redis.xrange(FEED) for v in f.values())
    if feed_bodies:
        assert data["body"] == "call me on 0207 946 0000"
    else:
        assert "body" not in data
        assert b"0207" not in raw


async def test_the_stream_can_be_turned_off(
    start_api: StartApi, twilio: FakeTwilio, redis: Redis
) -> None:
    api = await start_api(twilio_entry(twilio), events={"stream": False})
    assert (await twilio_inbound(api, "STOP")).status_code == 200
    assert await redis.exists(FEED) == 0


async def test_events_older_than_the_retention_are_trimmed(
    start_api: StartApi, twilio: FakeTwilio, redis: Redis
) -> None:
    two_days_ago_ms = int(time.time() * 1000) - 2 * 86_400_000
    await redis.xadd(
        FEED, {"id": "old", "type": "inbound.message", "data": "{}"}, id=f"{two_days_ago_ms}-0"
    )
    api = await start_api(twilio_entry(twilio), privacy={"retention_days": 1})
    # Trimmed without any new event (the workers trim now and then), kept the day before.
    assert await wait_until_async(lambda: feed(redis), lambda entries: entries == []) == []
    recent_ms = int(time.time() * 1000) - 3_600_000
    await redis.xadd(
        FEED, {"id": "recent", "type": "inbound.message", "data": "{}"}, id=f"{recent_ms}-0"
    )
    assert (await twilio_inbound(api, "Thanks")).status_code == 200
    assert [e["id"] for e in await feed_of(redis, 2)][:1] == ["recent"]
    assert len(await feed(redis)) == 2


async def test_erasing_a_number_keeps_only_its_opt_out(
    start_api: StartApi, twilio: FakeTwilio, redis: Redis
) -> None:
    api = await start_api(twilio_entry(twilio))
    challenge_id = await issue(api)
    await issue(api, OTHER)
    await delivered_to(twilio, 2)
    stop_sid = "SM" + "7" * 32
    assert (await twilio_inbound(api, "STOP", sid=stop_sid)).status_code == 200
    assert (await twilio_inbound(api, "Hi there")).status_code == 200
    others_events = len(await feed_of(redis, 3))  # the STOP's two events and the reply's
    tag = KeySpace("otp", INDEX_KEY).number_tag(PHONE)
    assert len(await redis.keys(f"otp:{{{tag}}}:*")) > 2

    response = await api.delete(f"/personal-data/{PHONE}")
    assert response.status_code == 200
    erased = response.json()
    assert erased["opt_out_kept"] is True
    assert erased["events_erased"] == 3  # optout.changed, two inbound.message
    # Left: the opt-out, its history, the digests of the keywords that asked for it, and the
    # marks of the two replies handled.
    left = sorted(k.decode().split("}:")[1] for k in await redis.keys(f"otp:{{{tag}}}:*"))
    assert [key.split(":")[0] for key in left] == ["in", "in", "optout", "optout", "optout"]
    assert left[2:] == ["optout", "optout:kw", "optout:log"]
    assert len(await feed(redis)) == others_events - 3
    assert all(PHONE not in json.dumps(e) for e in await feed(redis))
    assert_problem(await api.get(f"/challenge/{challenge_id}"), 404, "challenge_not_found")
    assert (await api.get(f"/opt-outs/{PHONE}")).json()["opted_out"] is True
    # The other number's challenge is untouched.
    assert len(await redis.keys("otp:{*}:c:*")) == 1
    # A provider repeating the STOP after the erasure changes nothing.
    assert (await twilio_inbound(api, "STOP", sid=stop_sid)).status_code == 200
    assert all(PHONE not in json.dumps(e) for e in await feed(redis))


async def test_erasing_validates_the_number(start_api: StartApi, twilio: FakeTwilio) -> None:
    api = await start_api(twilio_entry(twilio))
    assert_problem(await api.delete("/personal-data/0800-not-e164"), 400, "invalid_phone")


async def test_erasing_also_drops_events_still_waiting_for_the_app(
    start_api: StartApi, twilio: FakeTwilio, redis: Redis
) -> None:
    app_endpoint = FakeApp()
    app_endpoint.plan = [Planned("error")] * 50  # the app is down: events wait for retries
    try:
        api = await start_api(twilio_entry(twilio), **with_events(app_endpoint))
        assert (await twilio_inbound(api, "STOP")).status_code == 200

        async def waiting() -> int:
            return sum([await redis.zcard(key) for key in queue_keys("events", "delayed")])

        assert await wait_until_async(waiting, lambda count: count == 2) == 2
        erased = (await api.delete(f"/personal-data/{PHONE}")).json()
        assert erased["events_erased"] == 4  # two in the stream apps pull, two waiting
        assert await waiting() == 0
    finally:
        app_endpoint.close()


@pytest.mark.parametrize("opaque", [False, True])
async def test_erasing_finds_the_events_of_a_numbers_challenges_by_either_id(
    start_api: StartApi, twilio: FakeTwilio, redis: Redis, opaque: bool
) -> None:
    # An opaque id does not show its number's tag: erasure must open it to know.
    api = await start_api(twilio_entry(twilio), ids={"opaque": opaque})
    mine = await issue(api)
    theirs = await issue(api, OTHER)
    for challenge_id in (mine, theirs):
        data = json.dumps({"challenge_id": challenge_id})
        await redis.xadd(
            FEED, {"id": f"e-{challenge_id}", "type": "security.lockout", "data": data}
        )
    assert (await api.delete(f"/personal-data/{PHONE}")).status_code == 200
    left = [json.loads(f[b"data"]).get("challenge_id") for _, f in await redis.xrange(FEED)]
    assert mine not in left
    assert theirs in left
