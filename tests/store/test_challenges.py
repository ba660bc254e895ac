"""The scripts' contract, the same on one Redis node and on a real 3-master Redis Cluster."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any, NamedTuple

import httpx
import pytest
from redis.asyncio.cluster import RedisCluster

from otpservice.app import create_app
from otpservice.config.schema import Settings
from otpservice.crypto.codes import CodeHasher, Pepper
from otpservice.store import StoreClient, connect
from tests.support.app import PEPPER, Phone, cluster_client, running
from tests.support.helpers import assert_problem, wrong
from tests.support.servers.redis import RedisClusterServers, RedisServer

# Starts, kills or times real processes: run in one xdist worker, apart from the rest.
pytestmark = pytest.mark.xdist_group("processes")

NUMBERS = [f"+1415555{n:04d}" for n in range(100, 140)]


class StoreApi(NamedTuple):
    api: httpx.AsyncClient
    client: StoreClient
    hasher: CodeHasher


@pytest.fixture(params=["single", "cluster"])
async def store_api(
    request: pytest.FixtureRequest,
    make_settings: Callable[..., Settings],
    phone: Phone,
) -> AsyncIterator[StoreApi]:
    """The app on one node, then on a cluster, built through the production ``connect()``."""
    if request.param == "single":
        server: RedisServer = request.getfixturevalue("redis_server")
        settings = make_settings(server.url, send_limits={"min_interval_seconds": 0})
        client = connect(settings)
        await client.flushall()
    else:
        cluster: RedisClusterServers = request.getfixturevalue("redis_cluster_servers")
        await (await cluster_client(cluster)).aclose()
        settings = make_settings(
            cluster.url,
            redis={"url": cluster.url, "cluster": True},
            send_limits={"min_interval_seconds": 0},
        )
        client = connect(settings)
        assert isinstance(client, RedisCluster)
    hasher = CodeHasher(settings.hashing, Pepper(PEPPER))
    async with running(create_app(settings, redis=client, sms=phone.sender, hasher=hasher)) as api:
        yield StoreApi(api, client, hasher)
    await client.aclose()


async def _issue(api: httpx.AsyncClient, number: str) -> str:
    response = await api.post("/challenge", json={"phone": number})
    assert response.status_code == 201, response.text
    challenge_id: str = response.json()["challenge_id"]
    return challenge_id


async def test_challenges_on_many_slots_issue_verify_and_read(
    store_api: StoreApi, phone: Phone
) -> None:
    api = store_api.api
    ids = await asyncio.gather(*(_issue(api, n) for n in NUMBERS))
    # The tags spread the numbers over the cluster's slots.
    assert len({cid.split(".")[0] for cid in ids}) == len(NUMBERS)
    for challenge_id in ids[:10]:
        code = await phone.code_for(challenge_id)
        bad = await api.post("/verify", json={"challenge_id": challenge_id, "code": wrong(code)})
        assert_problem(bad, 400, "incorrect_code")
        ok = await api.post("/verify", json={"challenge_id": challenge_id, "code": code})
        assert ok.status_code == 200, ok.text
        state = (await api.get(f"/challenge/{challenge_id}")).json()
        assert state["status"] == "approved"
        # Sent by a delivery worker through the outbox, which has a slot of its own.
        assert state["delivery"]["status"] == "sent"
    cancelled = await api.delete(f"/challenge/{ids[-1]}")
    assert cancelled.json()["status"] == "cancelled"
    assert (await api.get("/readyz")).status_code == 200


async def test_exactly_once_and_budget_under_concurrency(store_api: StoreApi, phone: Phone) -> None:
    api = store_api.api
    right = await _issue(api, NUMBERS[0])
    code = await phone.code_for(right)
    responses = await asyncio.gather(
        *(api.post("/verify", json={"challenge_id": right, "code": code}) for _ in range(20))
    )
    assert Counter(r.status_code for r in responses)[200] == 1
    guessed = await _issue(api, NUMBERS[1])
    code = await phone.code_for(guessed)
    hashed_before = store_api.hasher.evaluations
    responses = await asyncio.gather(
        *(
            api.post("/verify", json={"challenge_id": guessed, "code": wrong(code)})
            for _ in range(50)
        )
    )
    # Exactly the budget of five was checked; every other guess was refused before hashing.
    assert store_api.hasher.evaluations - hashed_before == 5
    assert {r.json()["code"] for r in responses} <= {"incorrect_code", "too_many_attempts"}
    assert (await api.get(f"/challenge/{guessed}")).json()["attempts_left"] == 0


async def test_send_windows_and_replacement(store_api: StoreApi, phone: Phone) -> None:
    api = store_api.api
    ids = [await _issue(api, NUMBERS[2]) for _ in range(5)]
    refused = await api.post("/challenge", json={"phone": NUMBERS[2]})
    body: dict[str, Any] = assert_problem(refused, 429, "rate_limited")
    assert body["rule"] == "number_per_hour"
    states = [(await api.get(f"/challenge/{cid}")).json()["status"] for cid in ids]
    assert states == ["cancelled"] * 4 + ["pending"]


async def test_scripts_reload_after_flush_on_every_node(store_api: StoreApi, phone: Phone) -> None:
    api, client, _ = store_api
    challenge_id = await _issue(api, NUMBERS[3])
    if isinstance(client, RedisCluster):
        await client.execute_command("SCRIPT FLUSH", target_nodes=RedisCluster.ALL_NODES)
    else:
        await client.script_flush()
    ok = await api.post(
        "/verify", json={"challenge_id": challenge_id, "code": await phone.code_for(challenge_id)}
    )
    assert ok.status_code == 200, ok.text


async def test_readiness_fails_when_most_primaries_refuse_writes(store_api: StoreApi) -> None:
    api, client, _ = store_api
    assert (await api.get("/readyz")).status_code == 200
    if isinstance(client, RedisCluster):
        primaries = sorted(client.get_primaries(), key=lambda n: n.name)
        # One master of three refusing (failing over, full): its slots get 503s, the pod stays
        # in service for the others'. Two of three: not ready.
        targets = [{"target_nodes": node} for node in primaries]
    else:
        targets = [{}]
    majority = len(targets) // 2 + 1
    refusing: list[dict[str, Any]] = []
    try:
        for config in targets[:majority]:
            policy = ("maxmemory-policy", "noeviction")
            await client.execute_command("CONFIG", "SET", *policy, **config)
            await client.execute_command("CONFIG", "SET", "maxmemory", "1", **config)
            refusing.append(config)
            if len(refusing) < majority:
                assert (await api.get("/readyz")).status_code == 200
        assert_problem(await api.get("/readyz"), 503, "store_unavailable")
    finally:
        for config in refusing:
            await client.execute_command("CONFIG", "SET", "maxmemory", "0", **config)
    assert (await api.get("/readyz")).status_code == 200


async def test_opt_outs_list_and_erasure_across_slots(store_api: StoreApi) -> None:
    api = store_api.api
    numbers = sorted(NUMBERS[:6])
    for number in numbers:
        assert (await api.put(f"/opt-outs/{number}")).status_code == 200
    challenge_id = await _issue(api, NUMBERS[7])
    listed, after = [], ""
    while True:
        page = (await api.get("/opt-outs", params={"limit": 4, "after": after})).json()
        listed += [item["phone"] for item in page["items"]]
        if not (after := page["next"]):
            break
    assert sorted(listed) == numbers  # in the order of their keyed digests
    erased = (await api.delete(f"/personal-data/{NUMBERS[7]}")).json()
    assert erased["records_erased"] >= 2  # the challenge, its number's counters
    assert erased["opt_out_kept"] is False
    assert_problem(await api.get(f"/challenge/{challenge_id}"), 404, "challenge_not_found")
