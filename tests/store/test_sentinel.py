"""Redis behind a real Sentinel group: the service finds the master, and follows a failover."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest
from redis.asyncio import Redis

from otpservice.app import create_app
from otpservice.config.schema import Settings
from otpservice.store import connect
from tests.support.app import Phone, running
from tests.support.helpers import assert_problem, wrong
from tests.support.servers.redis import SENTINEL_MASTER, RedisSentinelGroup

# Starts and kills real processes: in the worker of the other failover tests.
pytestmark = pytest.mark.xdist_group("processes")


@pytest.fixture
def sentinel_group() -> Iterator[RedisSentinelGroup]:
    group = RedisSentinelGroup()
    yield group
    group.close()


@pytest.fixture
async def sentinel_api(
    sentinel_group: RedisSentinelGroup, make_settings: Callable[..., Settings], phone: Phone
) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        redis={
            "url": None,
            "sentinel": {"master_name": SENTINEL_MASTER, "nodes": sentinel_group.nodes},
            # A failover is a few seconds of 503s; each one should come back quickly.
            "socket_timeout_seconds": 0.5,
            "connect_timeout_seconds": 0.5,
        },
        send_limits={"min_interval_seconds": 0},
    )
    client = connect(settings)
    async with running(create_app(settings, redis=client, sms=phone.sender)) as api:
        yield api
    await client.aclose()


async def test_the_service_finds_the_master_through_the_sentinels(
    sentinel_api: httpx.AsyncClient, sentinel_group: RedisSentinelGroup, phone: Phone
) -> None:
    assert (await sentinel_api.get("/readyz")).status_code == 200
    created = await sentinel_api.post("/challenge", json={"phone": "+14155550123"})
    assert created.status_code == 201, created.text
    challenge_id = created.json()["challenge_id"]
    code = await phone.code_for(challenge_id)
    approved = await sentinel_api.post("/verify", json={"challenge_id": challenge_id, "code": code})
    assert approved.status_code == 200
    # It went to the primary the sentinels name (the replica would have refused the write).
    primary = Redis(port=sentinel_group.primary.port)
    assert await primary.dbsize() > 0
    await primary.aclose()


async def test_a_failover_is_503s_then_the_promoted_replica(
    sentinel_api: httpx.AsyncClient, sentinel_group: RedisSentinelGroup, phone: Phone
) -> None:
    created = await sentinel_api.post("/challenge", json={"phone": "+14155550124"})
    challenge_id = created.json()["challenge_id"]
    code = await phone.code_for(challenge_id)
    primary = Redis(port=sentinel_group.primary.port)
    # The challenge is on the replica before the primary dies (WAIT: acknowledged by 1).
    assert await primary.execute_command("WAIT", 1, 5000) == 1
    await primary.aclose()
    wrong_answer = await sentinel_api.post(
        "/verify", json={"challenge_id": challenge_id, "code": wrong(code)}
    )
    assert_problem(wrong_answer, 400, "incorrect_code")
    primary = Redis(port=sentinel_group.primary.port)
    assert await primary.execute_command("WAIT", 1, 5000) == 1
    await primary.aclose()

    old_port = sentinel_group.primary.port
    sentinel_group.primary.kill()
    started = time.monotonic()
    statuses: list[int] = []
    # Until the sentinels promote the replica, every answer is a 503, never a 500 or a hang.
    while time.monotonic() - started < 25:
        response = await sentinel_api.get(f"/challenge/{challenge_id}")
        statuses.append(response.status_code)
        if response.status_code == 200:
            break
        assert_problem(response, 503, "store_unavailable")
        assert "retry-after" in response.headers
        await asyncio.sleep(0.2)
    assert statuses[-1] == 200, statuses
    assert sentinel_group.wait_for_new_master(old_port) == sentinel_group.replica.port
    # The promoted replica has the challenge and its spent attempt; the code approves once.
    state = (await sentinel_api.get(f"/challenge/{challenge_id}")).json()
    assert state["attempts_left"] == 4
    first = await sentinel_api.post("/verify", json={"challenge_id": challenge_id, "code": code})
    assert first.status_code == 200
    again = await sentinel_api.post("/verify", json={"challenge_id": challenge_id, "code": code})
    assert_problem(again, 410, "challenge_used")
    # New challenges go to the new master.
    fresh = await sentinel_api.post("/challenge", json={"phone": "+14155550125"})
    assert fresh.status_code == 201, fresh.text
    assert (await sentinel_api.get("/readyz")).status_code == 200
