"""Fixtures: a real redis-server per session (and a real cluster where asked), settings, apps."""

from __future__ import annotations

import io
import re
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
import pytest
from litestar import Litestar
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from otpservice.app import create_app
from otpservice.settings import Settings, load_settings
from otpservice.sms import ConsoleSender
from otpservice.store import connect
from tests.servers.redis import RedisClusterServers, RedisServer

ApiFactory = Callable[..., Any]
PEPPER = "test-pepper-0123456789abcdef"
INDEX_KEY = "test-index-key-0123456789abcdef"
# Light argon2 so the suite runs fast; tests about the default profile ask for it.
LIGHT_HASHING = {"memory_kib": 1024, "time_cost": 1}


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the session, on a free port; tests flush only this server."""
    server = RedisServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def redis_cluster_servers() -> Iterator[RedisClusterServers]:
    """A real 3-master Redis Cluster, started on first use."""
    cluster = RedisClusterServers()
    yield cluster
    cluster.close()


@pytest.fixture
async def redis(
    redis_server: RedisServer, make_settings: Callable[..., Settings]
) -> AsyncIterator[Redis]:
    """A client of the session's server, as the service builds it, emptied before the test.

    The server was started by this session, so flushing it touches no one else's data.
    """
    client = connect(make_settings(redis_server.url))
    assert isinstance(client, Redis)
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture
def make_settings() -> Callable[..., Settings]:
    """Build validated settings pointing at a given Redis, with test secrets."""

    def build(redis_url: str = "redis://127.0.0.1:1/0", **overrides: Any) -> Settings:
        raw: dict[str, Any] = {
            "redis": {"url": redis_url},
            "secrets": {"pepper": PEPPER, "index_key": INDEX_KEY},
            "hashing": dict(LIGHT_HASHING),
            # The tests read codes from the console sender, as a developer would.
            "unsafe": {"allow_console_sender": True},
        }
        for section, value in overrides.items():
            if isinstance(value, dict) and isinstance(raw.get(section), dict):
                raw[section] = {**raw[section], **value}
            else:
                raw[section] = value
        return load_settings(environ={}, overrides=raw)

    return build


class Phone:
    """What the console sender printed: the codes that reached each challenge's phone."""

    _LINE = re.compile(r"\[sms to (\+\d+)\] challenge=(\S+) (\d+) is your")

    def __init__(self) -> None:
        self.stream = io.StringIO()
        self.sender = ConsoleSender(self.stream)

    def messages(self) -> list[tuple[str, str, str]]:
        """(number, challenge id, code) of every message sent, in order."""
        return self._LINE.findall(self.stream.getvalue())

    def code_for(self, challenge_id: str) -> str:
        codes = [code for _, cid, code in self.messages() if cid == challenge_id]
        assert len(codes) == 1, f"expected one message for {challenge_id}, got {len(codes)}"
        return codes[0]


@pytest.fixture
def phone() -> Phone:
    return Phone()


@asynccontextmanager
async def running(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    """Start the app's service and call the app over HTTP in this event loop.

    What the app's lifespan does (start, close) is done here directly: its task group cannot be
    entered in one fixture task and left in another.
    """
    service = app.state.otp
    await service.start()
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://otp.test") as client:
            yield client
    finally:
        service.close()
        if app.state.providers is not None:
            await app.state.providers.aclose()


@pytest.fixture
async def api(make_api: ApiFactory) -> httpx.AsyncClient:
    """The app on the session's Redis, with default limits and light hashing."""
    client: httpx.AsyncClient = await make_api()
    return client


async def cluster_client(cluster: RedisClusterServers) -> RedisCluster:
    """A cluster client with every node emptied first."""
    client = RedisCluster.from_url(cluster.url)
    await client.flushall(target_nodes=RedisCluster.PRIMARIES)
    return client


@pytest.fixture
async def make_api(
    redis: Redis, make_settings: Callable[..., Settings], redis_server: RedisServer, phone: Phone
) -> AsyncIterator[ApiFactory]:
    """Start apps on the session's Redis with the given setting overrides."""
    async with AsyncExitStack() as stack:

        async def start(**overrides: Any) -> httpx.AsyncClient:
            settings = make_settings(redis_server.url, **overrides)
            app = create_app(settings, redis=redis, sms=phone.sender)
            return await stack.enter_async_context(running(app))

        yield start
