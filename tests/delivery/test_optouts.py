"""Opt-outs enforced: no challenge, no send, and the operator's routes."""

from __future__ import annotations

import base64
import json
import secrets

import pytest
from redis.asyncio import Redis

from otpservice.runtime import Runtime
from otpservice.store.keys import KeySpace
from tests.support.app import INDEX_KEY, OUTBOX_KEY
from tests.support.delivery import (
    MANUAL,
    StartApi,
    StartApp,
    acs_entry,
    deliver,
    delivery,
    issue,
    twilio_entry,
)
from tests.support.helpers import (
    PHONE,
    api_tokens,
    assert_problem,
    stored_bytes,
    wait_until_async,
)
from tests.support.servers.providers import FakeAcs, FakeTwilio, Planned

ADMIN = "admin-token-0123456789abcdef0123456789"
LOGIN = "login-token-0123456789abcdef01234567890"


TOKENS = api_tokens({"ops": ADMIN, "login": LOGIN}, {"ops": ["admin"], "login": ["otp"]})


def as_(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_an_opted_out_number_gets_no_challenge_until_it_opts_back_in(
    start_api: StartApi, acs: FakeAcs
) -> None:
    api = await start_api(acs_entry(acs), api_tokens=TOKENS)
    put = await api.put(f"/opt-outs/{PHONE}", headers=as_(ADMIN))
    assert put.status_code == 200, put.text
    assert put.json()["opted_out"] is True
    assert put.json()["source"] == "admin"
    refused = await api.post("/challenge", json={"phone": PHONE}, headers=as_(LOGIN))
    body = assert_problem(refused, 403, "recipient_opted_out")
    assert "START" in body["detail"]
    assert acs.received == []
    removed = await api.delete(f"/opt-outs/{PHONE}", headers=as_(ADMIN))
    assert removed.json()["opted_out"] is False
    assert (await api.get(f"/opt-outs/{PHONE}", headers=as_(ADMIN))).json()["opted_out"] is False
    created = await api.post("/challenge", json={"phone": PHONE}, headers=as_(LOGIN))
    assert created.status_code == 201


async def test_opt_out_routes_need_the_admin_scope(start_api: StartApi, acs: FakeAcs) -> None:
    api = await start_api(acs_entry(acs), api_tokens=TOKENS)
    assert_problem(await api.put(f"/opt-outs/{PHONE}", headers=as_(LOGIN)), 403, "forbidden")
    assert_problem(await api.get(f"/opt-outs/{PHONE}"), 401, "unauthorized")
    assert_problem(await api.get("/opt-outs/12345", headers=as_(ADMIN)), 400, "invalid_phone")


async def test_an_opt_out_between_accepting_and_sending_stops_the_message(
    start_app: StartApp, acs: FakeAcs
) -> None:
    api, app = await start_app(acs_entry(acs), outbox=MANUAL)
    runtime: Runtime = app.state.runtime
    challenge_id = await issue(api)
    assert (await api.put(f"/opt-outs/{PHONE}")).status_code == 200
    await deliver(runtime)
    assert acs.received == []
    state = await delivery(api, challenge_id)
    assert (state["status"], state["detail"]) == ("failed", "opted_out")


async def test_a_providers_unsubscribed_error_is_remembered_as_an_opt_out(
    start_api: StartApi, twilio: FakeTwilio
) -> None:
    twilio.plan = [Planned("refuse", error_code=21610)]
    api = await start_api(twilio_entry(twilio))
    await delivery(api, await issue(api))
    record = (await api.get(f"/opt-outs/{PHONE}")).json()
    assert (record["opted_out"], record["source"]) == (True, "provider_error")
    assert_problem(await api.post("/challenge", json={"phone": PHONE}), 403, "recipient_opted_out")
    assert len(twilio.received) == 1  # the second request never reached a provider


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_opt_out_routes_validate_the_number(
    start_api: StartApi, acs: FakeAcs, method: str
) -> None:
    api = await start_api(acs_entry(acs))
    response = await api.request(method, "/opt-outs/not-a-number")
    assert_problem(response, 400, "invalid_phone")


async def test_opt_outs_are_listed_a_page_at_a_time(
    start_api: StartApi, acs: FakeAcs, redis: Redis
) -> None:
    api = await start_api(acs_entry(acs))
    numbers = [f"+1415555010{i}" for i in range(5)]
    for number in reversed(numbers):
        assert (await api.put(f"/opt-outs/{number}")).status_code == 200
    await api.delete(f"/opt-outs/{numbers[2]}")
    listed, after, pages, cursors = [], "", 0, []
    while True:
        page = (await api.get("/opt-outs", params={"limit": 2, "after": after})).json()
        listed += [(item["phone"], item["source"]) for item in page["items"]]
        pages += 1
        if page["next"] is None:
            break
        after = page["next"]
        cursors.append(after)
    expected = [n for n in numbers if n != numbers[2]]
    assert sorted(listed) == [(n, "admin") for n in expected]
    assert pages == 2
    # Neither the cursor nor anything Redis keeps for opt-outs holds a number in clear.
    assert not [c for c in cursors if any(n[1:] in c for n in numbers)]
    kept = await stored_bytes(redis, "otp:*optout*")
    assert b"admin" in kept  # the records are there
    assert not [n for n in numbers if n[1:].encode() in kept]
    assert_problem(await api.get("/opt-outs", params={"limit": 0}), 400, "invalid_request")


async def test_opt_outs_the_release_before_kept_in_clear_are_sealed_and_still_listed(
    start_api: StartApi, acs: FakeAcs, redis: Redis
) -> None:
    # The release before: the number as the index member and in the record, in clear.
    old = "+14155550109"
    tag = KeySpace("otp", INDEX_KEY).number_tag(old)
    await redis.zadd("otp:{optouts}:index", {old: 0})
    await redis.hset(f"otp:{{{tag}}}:optout", mapping={"e": old, "at": 1, "src": "admin"})
    api = await start_api(acs_entry(acs))
    assert_problem(await api.post("/challenge", json={"phone": old}), 403, "recipient_opted_out")

    async def index() -> list[bytes]:
        return list(await redis.zrange("otp:{optouts}:index", 0, -1))

    # The workers seal it at start: the index and the record no longer hold the number.
    members = await wait_until_async(index, lambda found: found and old.encode() not in found)
    assert members
    assert old.encode() not in members
    assert await redis.hget(f"otp:{{{tag}}}:optout", "e") != old.encode()
    page = (await api.get("/opt-outs")).json()
    assert [item["phone"] for item in page["items"]] == [old]
    assert (await api.delete(f"/opt-outs/{old}")).status_code == 200
    assert await index() == []
    assert await redis.hlen("otp:{optouts}:numbers") == 0


async def test_operator_changes_are_audited_with_the_client(
    start_api: StartApi, acs: FakeAcs, redis: Redis
) -> None:
    api = await start_api(acs_entry(acs), api_tokens=TOKENS)
    assert (await api.put(f"/opt-outs/{PHONE}", headers=as_(ADMIN))).status_code == 200
    assert (await api.delete(f"/opt-outs/{PHONE}", headers=as_(ADMIN))).status_code == 200
    entries = [
        (f[b"kind"].decode(), f[b"actor"].decode(), json.loads(f[b"data"]))
        for _, f in await redis.xrange("otp:{audit}:stream")
    ]
    assert entries == [
        ("admin.opt_out", "ops", {"phone": "+*********23"}),
        ("admin.opt_in", "ops", {"phone": "+*********23"}),
    ]


async def test_a_rotated_outbox_key_reseals_the_opt_out_index(
    start_api: StartApi, acs: FakeAcs, redis: Redis
) -> None:
    number = "+14155550166"

    async def key_id() -> str:
        [sealed] = await redis.hvals("otp:{optouts}:numbers")
        return sealed.decode().partition(".")[0]

    first = await start_api(acs_entry(acs))
    assert (await first.put(f"/opt-outs/{number}")).status_code == 200
    before = await key_id()
    new_key = base64.b64encode(secrets.token_bytes(32)).decode()
    # A pod started with the new key (the old one still set as previous) seals anew.
    await start_api(
        acs_entry(acs), secrets={"outbox_key": new_key, "previous_outbox_key": OUTBOX_KEY}
    )
    assert await wait_until_async(key_id, lambda found: found != before) != before
    # So the old key can go: a pod with the new key only still lists the number.
    last = await start_api(acs_entry(acs), secrets={"outbox_key": new_key})
    page = (await last.get("/opt-outs")).json()
    assert [item["phone"] for item in page["items"]] == [number]
