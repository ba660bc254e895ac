"""Scripts sent straight down connections of their own: reused, tried once more when dropped,
never reading another call's reply, and closed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError, DataError, ResponseError

from otpservice.store.script_connections import ScriptConnections
from tests.support.servers.redis import RedisServer

# Starts, kills or times real processes: run in one xdist worker, apart from the rest.
pytestmark = pytest.mark.xdist_group("processes")

COUNT = "return redis.call('INCR', KEYS[1])"
ECHO = "return ARGV[1]"


@pytest.fixture
def server() -> Iterator[RedisServer]:
    """A redis-server of this module's test alone: stopped, stalled and flushed at will."""
    server = RedisServer("--enable-debug-command", "yes")
    yield server
    server.close()


@pytest.fixture
async def admin(server: RedisServer) -> AsyncIterator[Redis]:
    """A separate client that watches and disturbs the connections under test."""
    client = Redis.from_url(server.url, client_name="admin")
    yield client
    await client.aclose()


@pytest.fixture
async def client(server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(server.url)
    yield client
    await client.aclose()


@pytest.fixture
async def scripts(client: Redis) -> AsyncIterator[ScriptConnections]:
    connections = ScriptConnections(client.connection_pool.make_connection)
    yield connections
    await connections.close()


async def ours(admin: Redis) -> set[str]:
    """Ids of the connections open to Redis other than the admin's."""
    return {c["id"] for c in await admin.client_list() if c["name"] != "admin"}


async def ours_once_closed(admin: Redis, within_s: float = 5.0) -> set[str]:
    """``ours`` once Redis has seen the closes (it notices a closed socket on its next read)."""
    deadline = time.monotonic() + within_s
    while True:
        left = await ours(admin)
        if not left or time.monotonic() > deadline:
            return left
        await asyncio.sleep(0.01)


async def test_calls_reuse_one_connection_and_close_closes_it(
    scripts: ScriptConnections, client: Redis, admin: Redis
) -> None:
    count = client.register_script(COUNT)
    assert [await scripts.evalsha(count, ["n"], []) for _ in range(20)] == list(range(1, 21))
    assert len(await ours(admin)) == 1
    await scripts.close()
    assert await ours_once_closed(admin) == set()


async def test_concurrent_calls_each_run_once_on_at_most_a_connection_each(
    scripts: ScriptConnections, client: Redis, admin: Redis
) -> None:
    count = client.register_script(COUNT)
    replies = await asyncio.gather(*(scripts.evalsha(count, ["n"], []) for _ in range(10)))
    assert sorted(replies) == list(range(1, 11))
    assert 1 <= len(await ours(admin)) <= 10


async def test_each_dropped_connection_costs_one_retry_and_the_script_runs_once(
    scripts: ScriptConnections, client: Redis, admin: Redis
) -> None:
    count = client.register_script(COUNT)
    # Several idle connections, all dropped at once (as a Redis restart would).
    await asyncio.gather(*(scripts.evalsha(count, ["n"], []) for _ in range(5)))
    idle = len(await ours(admin))
    assert idle > 1
    assert await admin.client_kill_filter(_type="normal", skipme=True) == idle
    # Concurrent calls each take a stale connection, find it dropped and try a new one once.
    replies = await asyncio.gather(*(scripts.evalsha(count, ["n"], []) for _ in range(idle)))
    assert sorted(replies) == list(range(6, 6 + idle))


async def test_redis_down_is_a_connection_error_and_a_restart_is_survived(
    scripts: ScriptConnections, client: Redis, server: RedisServer
) -> None:
    echo = client.register_script(ECHO)
    assert await scripts.evalsha(echo, [], ["before"]) == b"before"
    server.stop()
    with pytest.raises(ConnectionError):
        await scripts.evalsha(echo, [], ["down"])
    server.start()  # scripts are gone with the old process: NOSCRIPT, then loaded again
    assert await scripts.evalsha(echo, [], ["after"]) == b"after"


async def test_a_flushed_script_is_loaded_again(
    scripts: ScriptConnections, client: Redis, admin: Redis
) -> None:
    echo = client.register_script(ECHO)
    assert await scripts.evalsha(echo, [], ["one"]) == b"one"
    await admin.script_flush()
    assert await scripts.evalsha(echo, [], ["two"]) == b"two"
    assert await admin.script_exists(echo.sha) == [True]


async def test_a_call_cut_off_by_its_deadline_leaves_no_reply_for_the_next(
    scripts: ScriptConnections, client: Redis, admin: Redis
) -> None:
    echo = client.register_script(ECHO)
    assert await scripts.evalsha(echo, [], ["warm"]) == b"warm"
    cut_off = await ours(admin)
    stall = asyncio.create_task(admin.execute_command("DEBUG", "SLEEP", "0.5"))
    await asyncio.sleep(0.05)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await scripts.evalsha(echo, [], ["first"])
    await stall
    # The cut-off connection, whose reply ("first") was still due, is not used again.
    assert await scripts.evalsha(echo, [], ["second"]) == b"second"
    assert len(await ours(admin)) == 1
    assert not (await ours(admin)) & cut_off


async def test_an_error_reply_is_raised_and_keeps_the_connection(
    scripts: ScriptConnections, client: Redis, admin: Redis
) -> None:
    failing = client.register_script("return redis.error_reply('ERR refused by the script')")
    echo = client.register_script(ECHO)
    assert await scripts.evalsha(echo, [], ["before"]) == b"before"
    connection = await ours(admin)
    with pytest.raises(ResponseError, match="refused by the script"):
        await scripts.evalsha(failing, [], [])
    assert await scripts.evalsha(echo, [], ["after"]) == b"after"
    assert await ours(admin) == connection  # the same connection, still in use


async def test_an_argument_redis_cannot_take_is_a_data_error(
    scripts: ScriptConnections, client: Redis
) -> None:
    echo = client.register_script(ECHO)
    with pytest.raises(DataError):
        await scripts.evalsha(echo, [], [None])
