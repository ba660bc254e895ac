"""The fraud guard: low conversion trips a prefix for the sources that caused it, or for
everyone when they are many; a whole calling code only as configured; counts in shards, read
from memory on a request's path."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any, NoReturn

import httpx
import pytest
from redis.asyncio import Redis

from otpservice.config.schema import FraudGuardSettings
from otpservice.errors import StoreUnavailable
from otpservice.store.fraud import FraudCounts, FraudGuardStore, SourceCounts
from otpservice.usecases.abuse import low_conversion, trip_scope
from tests.support.app import ApiFactory, Phone
from tests.support.helpers import (
    PHONE,
    api_tokens,
    assert_problem,
    challenge,
    issue,
    wait_until_async,
)


async def counted(
    api: httpx.AsyncClient, destination: str, sent: int, *, tripped: bool | None = None
) -> dict[str, Any]:
    """The destination's state once ``sent`` codes are counted and, if given, it is ``tripped``
    or not (the fraud guard's loop writes and judges every half second)."""
    for _ in range(50):
        state: dict[str, Any] = (await api.get(f"/fraud-guard/{destination}")).json()
        if state["sent"] >= sent and tripped in (None, state["tripped"]):
            return state
        await asyncio.sleep(0.05)
    return state


async def feed_events(
    redis: Redis, done: Callable[[list[tuple[bytes, dict[str, Any]]]], bool]
) -> list[tuple[bytes, dict[str, Any]]]:
    """(type, data) of the event stream's entries, once the relay has appended enough to be
    ``done`` (5 s at most)."""

    async def entries() -> list[tuple[bytes, dict[str, Any]]]:
        stream = await redis.xrange("otp:{events}:feed")
        return [(f[b"type"], json.loads(f[b"data"])) for _, f in stream]

    return await wait_until_async(entries, done)


async def fraud_api(make_api: ApiFactory, **guard: Any) -> httpx.AsyncClient:
    settings = {"min_sent": 3, "floor": 0.5, **guard}
    api: httpx.AsyncClient = await make_api(abuse={"rules": [], "fraud_guard": settings})
    return api


async def test_the_fraud_guard_trips_on_low_conversion_and_an_operator_clears_it(
    make_api: ApiFactory, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    api = await fraud_api(make_api)
    with caplog.at_level(logging.WARNING):
        for number in ("+447400123401", "+447400123402", "+447400123403"):
            await issue(api, number)  # none verified: SMS pumping looks like this
        state = await counted(api, "+4474", 3, tripped=True)
    # One source (the app sent no end-user address: the client is the source) made it trip,
    # so it is refused for that source only.
    assert (state["tripped"], state["scope"], state["refused_sources"]) == (True, "sources", 1)
    assert (state["sent"], state["verified"]) == (3, 0)
    refused = await challenge(api, "+447400123404")
    problem = assert_problem(refused, 429, "suspected_fraud")
    assert problem["rule"] == "fraud_guard:+4474"
    assert int(refused.headers["Retry-After"]) > 0
    # Other destinations go on, and the calling code itself is not tripped: by default a
    # country only raises an alert for an operator.
    assert (await challenge(api, PHONE)).status_code == 201
    assert (await challenge(api, "+447911123456")).status_code == 201
    assert (await api.get("/fraud-guard/+44")).json()["tripped"] is False
    assert any("fraud guard alert for +44" in r.getMessage() for r in caplog.records)
    cleared = (await api.delete("/fraud-guard/+4474")).json()
    assert cleared["was_tripped"] is True
    assert (await challenge(api, "+447400123404")).status_code == 201
    events = await feed_events(redis, lambda events: len(events) >= 2)
    # The relay takes events from the queue's shards in no promised order.
    assert sorted((kind, data["destination"], data["scope"] or "") for kind, data in events) == [
        (b"fraud.cleared", "+4474", ""),
        (b"fraud.tripped", "+4474", "sources"),
    ]
    # The audit stream keeps the trip and who cleared it.
    audit = [(f[b"kind"], f[b"actor"]) for _, f in await redis.xrange("otp:{audit}:stream")]
    assert audit.count((b"fraud.tripped", b"service")) == 1
    assert [a for a in audit if a[0] == b"admin.fraud_clear"] == [
        (b"admin.fraud_clear", b"default")
    ]
    assert_problem(await api.get("/fraud-guard/44"), 400, "invalid_destination")


async def test_verified_codes_keep_the_fraud_guard_quiet(
    make_api: ApiFactory, phone: Phone
) -> None:
    api = await fraud_api(make_api)
    for i, number in enumerate(("+447400123401", "+447400123402", "+447400123403")):
        challenge_id = (await issue(api, number))["challenge_id"]
        if i < 2:
            code = await phone.code_for(challenge_id)
            ok = await api.post("/verify", json={"challenge_id": challenge_id, "code": code})
            assert ok.status_code == 200
    await counted(api, "+4474", 3)
    # 2 of 3 verified: above the floor of one half.
    assert (await challenge(api, "+447400123404")).status_code == 201
    state = await counted(api, "+4474", 4)
    assert (state["tripped"], state["sent"], state["verified"]) == (False, 4, 2)


async def test_the_fraud_guard_in_monitor_mode_refuses_nothing(make_api: ApiFactory) -> None:
    api = await fraud_api(make_api, mode="monitor")
    for number in ("+447400123401", "+447400123402", "+447400123403"):
        assert (await challenge(api, number)).status_code == 201
    assert (await counted(api, "+4474", 3, tripped=True))["tripped"] is True
    assert (await challenge(api, "+447400123404")).status_code == 201


async def test_the_fraud_guard_recovers_when_codes_get_verified(
    make_api: ApiFactory, phone: Phone, redis: Redis
) -> None:
    api = await fraud_api(make_api)
    ids = [
        (await issue(api, number))["challenge_id"]
        for number in ("+447400123401", "+447400123402", "+447400123403")
    ]
    await counted(api, "+4474", 3, tripped=True)
    assert_problem(await challenge(api, "+447400123404"), 429, "suspected_fraud")
    # The codes were real after all: two of the three get verified.
    for challenge_id in ids[:2]:
        code = await phone.code_for(challenge_id)
        ok = await api.post("/verify", json={"challenge_id": challenge_id, "code": code})
        assert ok.status_code == 200
    assert (await counted(api, "+4474", 3, tripped=False))["verified"] == 2
    assert (await challenge(api, "+447400123404")).status_code == 201
    events = await feed_events(
        redis, lambda events: [kind for kind, _ in events].count(b"fraud.cleared") >= 1
    )
    cleared = [data for kind, data in events if kind == b"fraud.cleared"]
    assert [(c["destination"], c["source"]) for c in cleared] == [("+4474", "window")]


async def test_the_safe_list_stays_out_of_the_fraud_guards_counts(
    make_api: ApiFactory, phone: Phone
) -> None:
    api = await make_api(
        abuse={
            "rules": [],
            "safe_list": {"prefixes": ["+4474"]},
            "fraud_guard": {"min_sent": 3, "floor": 0.5},
        }
    )
    challenge_id = (await issue(api, "+447400123401"))["challenge_id"]
    code = await phone.code_for(challenge_id)
    assert (
        await api.post("/verify", json={"challenge_id": challenge_id, "code": code})
    ).status_code == 200
    await asyncio.sleep(0.7)  # past a flush
    state = (await api.get("/fraud-guard/+44")).json()
    assert (state["sent"], state["verified"]) == (0, 0)


def fraud_store(api: httpx.AsyncClient) -> FraudGuardStore:
    """The fraud guard store of the app behind ``api``."""
    transport = api._transport
    assert isinstance(transport, httpx.ASGITransport)
    store: FraudGuardStore = transport.app.state.runtime.stores.fraud  # type: ignore[attr-defined]
    return store


async def test_two_processes_count_on_their_own_shards_and_both_refuse_the_sum(
    make_api: ApiFactory, redis: Redis
) -> None:
    first, second = await fraud_api(make_api), await fraud_api(make_api)
    fraud_store(first)._shard, fraud_store(second)._shard = 0, 1
    await issue(first, "+447400123401")
    await issue(first, "+447400123402")
    await issue(second, "+447400123403")
    # Neither process alone sent min_sent (3): the sum over the shards trips it, and each
    # process refuses once its own loop has read the fleet's tripped set (a half second).
    assert (await counted(first, "+4474", 3, tripped=True))["tripped"] is True
    for index, api in enumerate((first, second)):
        for attempt in range(20):
            response = await challenge(api, f"+447400126{index}{attempt:02}")
            if response.status_code == 429:
                break
            await asyncio.sleep(0.1)
        assert_problem(response, 429, "suspected_fraud")
        assert attempt <= 10  # within a second or so
    assert await redis.exists("otp:{fg:+44:0}", "otp:{fg:+44:1}") == 2
    assert not await redis.exists("otp:{fg:+44}")  # no one slot for every process's counts


async def test_a_challenge_reads_the_fraud_guard_from_memory_only(
    make_api: ApiFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    api = await fraud_api(make_api)
    for number in ("+447400123401", "+447400123402", "+447400123403"):
        await issue(api, number)
    await counted(api, "+4474", 3, tripped=True)
    store = fraud_store(api)

    async def unreachable(*args: object, **kwargs: object) -> NoReturn:
        raise StoreUnavailable("the fraud guard's master is failing over")

    for method in ("add", "counts", "tripped", "trip", "untrip"):
        monkeypatch.setattr(store, method, unreachable)
    # Its master is down: the guard's last view stands, and other destinations go on.
    assert_problem(await challenge(api, "+447400123404"), 429, "suspected_fraud")
    assert (await challenge(api, PHONE)).status_code == 201
    assert (await challenge(api, "+33612345678")).status_code == 201


def french_mobiles(count: int) -> list[str]:
    return [f"+3361234{n:04d}" for n in range(count)]


FRENCH_LANDLINE = "+33123456789"


async def pump(api: httpx.AsyncClient, numbers: list[str], ips: list[str]) -> None:
    """Codes to ``numbers`` from the addresses ``ips`` in turn, none verified."""
    for index, number in enumerate(numbers):
        response = await challenge(api, number, ips[index % len(ips)])
        assert response.status_code == 201, response.text


async def test_one_source_cannot_switch_a_prefix_off_for_everyone(make_api: ApiFactory) -> None:
    # The red team's attack: 60 unverified codes to French mobiles from 7 addresses (one /24),
    # under the defaults (floor 0.2, min_sent 50). Before, every client got 429 for any French
    # number for the rest of the hour.
    api = await make_api(abuse={"rules": [], "fraud_guard": {"prefix_digits": 1}})
    attackers = [f"203.0.113.{n}" for n in range(1, 8)]
    await pump(api, french_mobiles(60), attackers)
    state = await counted(api, "+336", 60, tripped=True)
    assert (state["tripped"], state["scope"], state["refused_sources"]) == (True, "sources", 1)
    # Another end user still gets a code for a French mobile and a landline; the attacker's
    # network (any address of its /24) does not.
    assert (await challenge(api, "+33612349998", "198.51.100.20")).status_code == 201
    assert (await challenge(api, FRENCH_LANDLINE, "198.51.100.21")).status_code == 201
    refused = await challenge(api, "+33612349999", "203.0.113.200")
    assert assert_problem(refused, 429, "suspected_fraud")["rule"] == "fraud_guard:+336"
    assert (await api.get("/fraud-guard/+33")).json()["tripped"] is False


async def test_the_same_codes_from_forty_networks_trip_the_prefix_for_everyone(
    make_api: ApiFactory,
) -> None:
    api = await make_api(abuse={"rules": [], "fraud_guard": {"prefix_digits": 1}})
    networks = [f"10.{n}.0.1" for n in range(40)]  # 40 /24s: a botnet, not one attacker
    await pump(api, french_mobiles(60), networks)
    state = await counted(api, "+336", 60, tripped=True)
    assert (state["tripped"], state["scope"]) == (True, "everyone")
    refused = await challenge(api, "+33612349998", "198.51.100.20")
    assert assert_problem(refused, 429, "suspected_fraud")["rule"] == "fraud_guard:+336"
    # The prefix, not the country: landlines (+331) go on.
    assert (await challenge(api, FRENCH_LANDLINE, "198.51.100.21")).status_code == 201
    assert (await api.get("/fraud-guard/+331")).json()["tripped"] is False


async def test_a_pumped_quiet_premium_like_prefix_still_trips_against_its_baseline(
    make_api: ApiFactory,
) -> None:
    # +4470 (UK "personal numbers", billed like premium rate) sees a few codes a day, most
    # verified: its baseline. A pump of unverified codes from many networks trips it.
    api = await make_api(abuse={"rules": [], "fraud_guard": {"min_sent": 20}})
    store, now = fraud_store(api), int(time.time())
    for day in range(1, 8):
        await store.add(
            "+44", ["+44", "+4470"], 3600, sent=10, verified=9, sources=[], now_s=now - day * 86400
        )
    state = (await api.get("/fraud-guard/+4470")).json()
    assert (state["baseline_sent"], state["baseline_verified"]) == (70, 63)
    await pump(api, [f"+44701234{n:04d}" for n in range(20)], [f"10.{n}.0.1" for n in range(8)])
    state = await counted(api, "+4470", 20, tripped=True)
    assert (state["tripped"], state["scope"]) == (True, "everyone")
    refused = await challenge(api, "+447012349999", "198.51.100.20")
    assert assert_problem(refused, 429, "suspected_fraud")["rule"] == "fraud_guard:+4470"


def window(sent: int, verified: int, base_sent: int = 0, base_verified: int = 0) -> FraudCounts:
    return FraudCounts(
        destination="+4470",
        sent=sent,
        verified=verified,
        oldest_leaves_at_s=1,
        baseline_sent=base_sent,
        baseline_verified=base_verified,
        baseline_days=7 if base_sent else 0,
    )


def test_a_destination_is_judged_against_its_own_baseline() -> None:
    guard = FraudGuardSettings(min_sent=20, floor=0.2)
    # No baseline yet: min_sent and floor, as before.
    assert low_conversion(window(20, 3), guard)
    assert not low_conversion(window(19, 0), guard)
    # A busy destination (7 days of 100 codes an hour) needs three times its hourly mean.
    busy = 7 * 24 * 100
    assert not low_conversion(window(299, 0, busy, busy // 2), guard)
    assert low_conversion(window(300, 0, busy, busy // 2), guard)
    # One that normally converts poorly (30 %) trips under half that, 15 %, not under 20 %.
    assert not low_conversion(window(20, 3, 700, 210), guard)
    assert low_conversion(window(20, 2, 700, 210), guard)
    # Fewer than min_sent codes over the week are no baseline.
    assert low_conversion(window(20, 3, 19, 1), guard)


def sources(**counts: tuple[int, int]) -> dict[str, SourceCounts]:
    """Sources by name: (sent, verified) each."""
    return {n: SourceCounts(source=n, sent=s, verified=v) for n, (s, v) in counts.items()}


def test_whom_a_tripped_prefix_refuses() -> None:
    # Fewer than min_sources sources: those pumping (under the floor themselves, with a real
    # share of the unverified codes), no one else; apps whose own users verify are not refused
    # with them, nor is a user whose one code is still on its way.
    few = sources(a=(100, 0), b=(20, 18), c=(20, 18), d=(1, 0))
    assert trip_scope(few, 5, 0.2) == ("sources", ["a"])
    assert trip_scope(sources(a=(30, 0), b=(20, 0), c=(10, 1)), 5, 0.2) == ("sources", ["a", "b"])
    # Enough sources, but one above half of the unverified codes: that one.
    many = sources(a=(60, 0), b=(4, 3), c=(4, 3), d=(4, 3), e=(4, 3))
    assert trip_scope(many, 5, 0.2) == ("sources", ["a"])
    # The worked example of docs/abuse.md: one server's 400 codes beside the app's 100 users.
    users = {f"u{n}": (1, 0) if n < 15 else (1, 1) for n in range(100)}
    assert trip_scope(sources(attacker=(400, 0), **users), 5, 0.2) == ("sources", ["attacker"])
    # Many sources, none above half: everyone.
    assert trip_scope(sources(**{n: (2, 0) for n in "abcde"}), 5, 0.2) == ("everyone", [])
    spread = sources(a=(50, 0), b=(20, 0), c=(10, 0), d=(10, 0), e=(10, 0))
    assert trip_scope(spread, 5, 0.2) == ("everyone", [])
    # Counts of the release before carry no source: everyone, as that release did.
    assert trip_scope({}, 5, 0.2) == ("everyone", [])


async def test_a_crowded_slot_drops_its_smallest_sources_whole(make_api: ApiFactory) -> None:
    store, now = fraud_store(await fraud_api(make_api)), int(time.time())
    crowd = [SourceCounts(source=f"user{n}", sent=1, verified=1) for n in range(300)]
    crowd += [SourceCounts(source="busy", sent=50, verified=49)]
    await store.add("+44", ["+44", "+4474"], 3600, sent=350, verified=349, sources=crowd, now_s=now)
    kept = await store.by_source("+44", "+4474", 3600, now_s=now)
    assert len(kept) == 256
    # Kept with its verified count: a dropped "v:" alone would make it look like pumping.
    assert (kept["busy"].sent, kept["busy"].verified) == (50, 49)
    assert all(c.verified == c.sent for name, c in kept.items() if name != "busy")


async def test_a_code_verified_through_another_process_counts_for_its_source(
    make_api: ApiFactory, phone: Phone
) -> None:
    # Each process counts on its own shard: a code sent through one and verified through the
    # other must still count as verified for its source (summed before subtracting).
    first, second = await fraud_api(make_api), await fraud_api(make_api)
    fraud_store(first)._shard, fraud_store(second)._shard = 0, 1
    for number in ("+447400123401", "+447400123402", "+447400123403"):
        challenge_id = (await issue(first, number, client_ip="203.0.113.5"))["challenge_id"]
        code = await phone.code_for(challenge_id)
        verify = {"challenge_id": challenge_id, "code": code}
        assert (await second.post("/verify", json=verify)).status_code == 200
    await counted(first, "+4474", 3)
    await asyncio.sleep(0.7)  # both processes' counts written
    [counts] = (
        await fraud_store(first).by_source("+44", "+4474", 3600, now_s=int(time.time()))
    ).values()
    assert (counts.sent, counts.verified) == (3, 3)


async def test_with_several_clients_only_the_contributing_client_is_refused(
    make_api: ApiFactory,
) -> None:
    tokens = {"app-a": "token-a-0123456789abcdef0123456789", "app-b": "token-b-0123456789abcdef01"}
    api = await make_api(
        api_tokens=api_tokens(tokens, {"app-a": ["otp", "admin"], "app-b": ["otp"]}),
        abuse={"rules": [], "fraud_guard": {"min_sent": 3, "floor": 0.5}},
    )
    api.headers["Authorization"] = f"Bearer {tokens['app-a']}"
    b = {"Authorization": f"Bearer {tokens['app-b']}"}
    await pump(api, ["+447400123401", "+447400123402", "+447400123403"], ["203.0.113.5"])
    state = await counted(api, "+4474", 3, tripped=True)
    assert (state["tripped"], state["scope"]) == (True, "sources")
    # The same network through the other client is another source: not refused.
    body = {"phone": "+447400123405", "client_ip": "203.0.113.5"}
    assert (await api.post("/challenge", json=body, headers=b)).status_code == 201
    body = {"phone": "+447400123406", "client_ip": "203.0.113.6"}
    refused = await api.post("/challenge", json=body)
    assert assert_problem(refused, 429, "suspected_fraud")["rule"] == "fraud_guard:+4474"


async def test_a_calling_code_trips_once_three_of_its_prefixes_have_when_so_configured(
    make_api: ApiFactory,
) -> None:
    api = await make_api(
        abuse={
            "rules": [],
            "fraud_guard": {"min_sent": 5, "min_sources": 2, "country_trip": "prefixes"},
        }
    )
    networks = [f"10.{n}.0.1" for n in range(5)]
    for prefix in ("+4474", "+4475"):
        await pump(api, [f"{prefix}00123{n:03d}" for n in range(5)], networks)
        assert (await counted(api, prefix, 5, tripped=True))["scope"] == "everyone"
    # Two prefixes tripped: the rest of the country goes on.
    assert (await challenge(api, "+447911123456", "198.51.100.20")).status_code == 201
    await pump(api, [f"+447600123{n:03d}" for n in range(5)], networks)
    await counted(api, "+4476", 5, tripped=True)
    state = await counted(api, "+44", 0, tripped=True)
    assert (state["tripped"], state["scope"]) == (True, "everyone")
    refused = await challenge(api, "+447911123457", "198.51.100.21")
    assert assert_problem(refused, 429, "suspected_fraud")["rule"] == "fraud_guard:+44"
