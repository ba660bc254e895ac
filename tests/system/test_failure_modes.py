"""Health probes and failure modes: Redis down, slow, full, restarted; scripts flushed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from otpservice.app import create_app
from otpservice.config.schema import Settings
from otpservice.crypto.codes import CodeHasher, Pepper
from otpservice.store import connect
from tests.support.app import PEPPER, Phone, running
from tests.support.helpers import PHONE, assert_problem, issue, issue_code, wrong
from tests.support.servers.redis import RedisServer, free_port

Start = Callable[..., Any]


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A redis-server of this test alone, free to be stopped, paused or filled up."""
    server = RedisServer(
        "--appendonly", "yes", "--appendfsync", "always", "--enable-debug-command", "yes"
    )
    yield server
    server.close()


@pytest.fixture
async def start_app(make_settings: Callable[..., Settings], phone: Phone) -> AsyncIterator[Start]:
    """Apps whose store client comes from the production ``connect()`` (timeouts, retry)."""
    async with AsyncExitStack() as stack:

        async def start(
            url: str, hasher: CodeHasher | None = None, **overrides: Any
        ) -> httpx.AsyncClient:
            settings = make_settings(url, **overrides)
            client = connect(settings)
            stack.push_async_callback(client.aclose)
            app = phone.watch(create_app(settings, redis=client, sms=phone.sender, hasher=hasher))
            return await stack.enter_async_context(running(app))

        yield start


async def test_health_is_independent_of_redis_and_readiness_is_not(start_app: Start) -> None:
    api = await start_app(f"redis://127.0.0.1:{free_port()}/0")
    assert (await api.get("/healthz")).status_code == 200
    assert_problem(await api.get("/readyz"), 503, "store_unavailable")


async def test_redis_down_is_503_with_retry_after_and_sends_nothing(
    start_app: Start, phone: Phone
) -> None:
    api = await start_app(f"redis://127.0.0.1:{free_port()}/0")
    for response in (
        await api.post("/challenge", json={"phone": PHONE}),
        await api.post(
            "/verify", json={"challenge_id": "a" * 16 + "." + "b" * 22, "code": "123456"}
        ),
        await api.get("/challenge/" + "a" * 16 + "." + "b" * 22),
    ):
        assert_problem(response, 503, "store_unavailable")
        assert int(response.headers["retry-after"]) >= 1
    assert (await phone.sent()) == []


async def test_redis_dying_mid_verify_never_approves(
    private_redis: RedisServer,
    start_app: Start,
    make_settings: Callable[..., Settings],
    phone: Phone,
) -> None:
    class StopRedisWhileHashing(CodeHasher):
        async def check_code(self, *args: Any) -> bool:
            matched = await super().check_code(*args)
            private_redis.stop()
            return matched

    settings = make_settings(private_redis.url)
    api = await start_app(
        private_redis.url, hasher=StopRedisWhileHashing(settings.hashing, Pepper(PEPPER))
    )
    challenge_id = (await issue(api))["challenge_id"]
    response = await api.post(
        "/verify", json={"challenge_id": challenge_id, "code": await phone.code_for(challenge_id)}
    )
    assert_problem(response, 503, "store_unavailable")


async def test_service_recovers_by_itself_after_a_redis_restart(
    private_redis: RedisServer, start_app: Start, phone: Phone
) -> None:
    api = await start_app(private_redis.url)
    challenge_id = (await issue(api))["challenge_id"]
    code = await phone.code_for(challenge_id)
    assert (await api.get("/readyz")).status_code == 200
    private_redis.stop()
    assert_problem(await api.get("/readyz"), 503, "store_unavailable")
    private_redis.start()  # same port; AOF brings the challenge back, scripts are gone
    assert (await api.get("/readyz")).status_code == 200
    response = await api.post("/verify", json={"challenge_id": challenge_id, "code": code})
    assert response.status_code == 200, response.text


async def test_scripts_survive_script_flush(
    private_redis: RedisServer, start_app: Start, phone: Phone
) -> None:
    api = await start_app(private_redis.url)
    challenge_id = (await issue(api))["challenge_id"]
    admin = Redis.from_url(private_redis.url)
    await admin.script_flush()
    response = await api.post(
        "/verify", json={"challenge_id": challenge_id, "code": await phone.code_for(challenge_id)}
    )
    assert response.status_code == 200, response.text
    await admin.script_flush()
    assert (await api.get("/readyz")).status_code == 200
    await admin.aclose()


async def test_slow_redis_is_503_and_never_counts_twice(
    private_redis: RedisServer, start_app: Start, phone: Phone
) -> None:
    # Timeouts with room for a loaded CI machine: 0.5 s against a 1.2 s stall.
    api = await start_app(private_redis.url, redis={"socket_timeout_seconds": 0.5})
    challenge_id, code = await issue_code(api, phone)
    admin = Redis.from_url(private_redis.url)
    loop = asyncio.get_running_loop()

    # Redis stalls for 1.2 s: the call times out and is not sent a second time. The stalled
    # script still runs when Redis wakes up, so exactly one attempt is counted, not two.
    stall = asyncio.create_task(admin.execute_command("DEBUG", "SLEEP", "1.2"))
    await asyncio.sleep(0.05)
    started = loop.time()
    response = await api.post("/verify", json={"challenge_id": challenge_id, "code": wrong(code)})
    assert loop.time() - started < 1.1
    assert_problem(response, 503, "store_unavailable")
    await stall
    assert (await api.get(f"/challenge/{challenge_id}")).json()["attempts_left"] == 4

    await admin.execute_command("CLIENT", "PAUSE", "1200", "ALL")
    response = await api.post("/challenge", json={"phone": "+14155550124"})
    assert_problem(response, 503, "store_unavailable")
    await asyncio.sleep(1.3)
    assert len(await phone.sent()) == 1
    # The refused request counted nothing: no 429 for the minimum interval now.
    assert (await api.post("/challenge", json={"phone": "+14155550124"})).status_code == 201
    await admin.aclose()


async def test_full_redis_refusing_writes_is_503_and_sends_nothing(
    private_redis: RedisServer, start_app: Start, phone: Phone
) -> None:
    api = await start_app(private_redis.url)
    challenge_id = (await issue(api))["challenge_id"]
    code = await phone.code_for(challenge_id)  # sent before Redis fills up
    admin = Redis.from_url(private_redis.url)
    await admin.config_set("maxmemory-policy", "noeviction")
    await admin.config_set("maxmemory", "1")
    response = await api.post("/challenge", json={"phone": "+14155550124"})
    assert_problem(response, 503, "store_unavailable")
    assert len(await phone.sent()) == 1
    response = await api.post("/verify", json={"challenge_id": challenge_id, "code": code})
    assert_problem(response, 503, "store_unavailable")
    assert_problem(await api.get("/readyz"), 503, "store_unavailable")
    await admin.config_set("maxmemory", "0")
    assert (await api.get("/readyz")).status_code == 200
    await admin.aclose()
