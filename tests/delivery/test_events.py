"""Events for the login app: challenge.delivered / challenge.failed, signed, retried."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from otpservice.workers import events_relay as events_module
from tests.support.delivery import (
    StartApi,
    acs_entry,
    code_in,
    delivery,
    issue,
    queue_keys,
    twilio_entry,
)
from tests.support.events import received, with_events
from tests.support.helpers import PHONE
from tests.support.servers.providers import FakeAcs, FakeApp, FakeTwilio, Planned
from tests.support.webhooks import HEADERS, acs_report, twilio_inbound


async def test_a_delivery_report_becomes_a_signed_challenge_delivered_event(
    start_api: StartApi, acs: FakeAcs, app_endpoint: FakeApp
) -> None:
    api = await start_api(acs_entry(acs), **with_events(app_endpoint))
    challenge_id = await issue(api)
    await delivery(api, challenge_id)
    report = [acs_report(challenge_id, "Delivered")]
    for _ in range(2):  # Event Grid delivers at least once
        assert (await api.post("/webhooks/acs", json=report, headers=HEADERS)).status_code == 200
    assert await received(app_endpoint, 2) == ["challenge.delivered"] * 2
    first, repeat = app_endpoint.delivered
    assert app_endpoint.refused == []  # the signature checked out
    # The same webhook-id both times: the app can drop the repeat.
    assert first.headers["webhook-id"] == repeat.headers["webhook-id"]
    assert first.fields["data"] == {
        "challenge_id": challenge_id,
        "status": "delivered",
        "provider": "acs",
        "detail": "No error.",
    }
    assert "timestamp" in first.fields


async def test_a_refused_number_becomes_challenge_failed(
    start_api: StartApi, twilio: FakeTwilio, app_endpoint: FakeApp
) -> None:
    twilio.plan = [Planned("refuse", error_code=21211)]
    api = await start_api(twilio_entry(twilio), **with_events(app_endpoint))
    challenge_id = await issue(api)
    assert await received(app_endpoint) == ["challenge.failed"]
    data = app_endpoint.delivered[0].fields["data"]
    assert (data["challenge_id"], data["status"], data["detail"]) == (
        challenge_id,
        "failed",
        "invalid_number",
    )


async def test_events_are_retried_until_the_app_takes_them(
    start_api: StartApi,
    twilio: FakeTwilio,
    app_endpoint: FakeApp,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(events_module, "RETRY_BASE_SECONDS", 0.05)
    app_endpoint.plan = [Planned("error"), Planned("busy")]
    twilio.plan = [Planned("refuse", error_code=21211)]
    api = await start_api(twilio_entry(twilio), **with_events(app_endpoint))
    await issue(api)
    assert await received(app_endpoint) == ["challenge.failed"]
    assert len(app_endpoint.received) == 3  # 500, 429, then taken


async def test_an_unsubscribed_error_tells_the_app_twice(
    start_api: StartApi, twilio: FakeTwilio, app_endpoint: FakeApp
) -> None:
    twilio.plan = [Planned("refuse", error_code=21610)]
    api = await start_api(twilio_entry(twilio), **with_events(app_endpoint))
    await issue(api)
    assert sorted(await received(app_endpoint, 2)) == ["challenge.failed", "optout.changed"]


async def test_with_neither_a_callback_url_nor_the_stream_no_event_is_queued(
    start_api: StartApi, twilio: FakeTwilio, redis: Redis
) -> None:
    twilio.plan = [Planned("refuse", error_code=21211)]
    api = await start_api(twilio_entry(twilio), events={"stream": False})
    challenge_id = await issue(api)
    assert (await delivery(api, challenge_id))["status"] == "failed"
    assert not await redis.exists(*queue_keys("events"), "otp:{events}:stream")


async def test_replies_and_opt_out_changes_are_relayed_to_the_app(
    start_api: StartApi, twilio: FakeTwilio, app_endpoint: FakeApp
) -> None:
    api = await start_api(twilio_entry(twilio), **with_events(app_endpoint))
    for body in ("Thanks!", "STOP"):
        assert (await twilio_inbound(api, body)).status_code == 200
    kinds = await received(app_endpoint, 3)
    assert sorted(kinds) == ["inbound.message", "inbound.message", "optout.changed"]
    by_type: dict[str, list[dict[str, object]]] = {}
    for message in app_endpoint.delivered:
        by_type.setdefault(message.body, []).append(message.fields["data"])
    assert {(m["body"], m["keyword"]) for m in by_type["inbound.message"]} == {
        ("Thanks!", None),
        ("STOP", "opt_out"),
    }
    [change] = by_type["optout.changed"]
    assert (change["phone"], change["opted_out"], change["source"]) == (PHONE, True, "keyword")


async def test_a_lockout_tells_the_app(
    start_api: StartApi, acs: FakeAcs, app_endpoint: FakeApp, redis: Redis
) -> None:
    api = await start_api(
        acs_entry(acs), lockout={"max_failures": 2, "base_seconds": 60}, **with_events(app_endpoint)
    )
    challenge_id = await issue(api)
    await delivery(api, challenge_id)
    code = code_in(acs)
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    for _ in range(2):
        await api.post("/verify", json={"challenge_id": challenge_id, "code": wrong})
    assert "security.lockout" in await received(app_endpoint, 1)
    [lockout] = [m.fields["data"] for m in app_endpoint.delivered if m.body == "security.lockout"]
    assert lockout == {"challenge_id": challenge_id, "locked_for_seconds": 60}
    audited = [f[b"kind"] for _, f in await redis.xrange("otp:{audit}:stream")]
    assert audited == [b"security.lockout"]
