"""Fixtures: a real redis-server per session (and a real cluster where asked), settings, apps."""

from __future__ import annotations

import asyncio
import io
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
import pytest
from litestar import Litestar
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from otpservice.app import create_app
from otpservice.config.schema import Settings
from otpservice.errors import StoreUnavailable
from otpservice.models import OutboxEntry
from otpservice.sms.console import ConsoleSender
from otpservice.store import connect
from otpservice.store.queues import QueueStore
from otpservice.validation import load_settings
from tests.servers.redis import RedisClusterServers, RedisServer

ApiFactory = Callable[..., Any]
PEPPER = "test-pepper-0123456789abcdef"
OUTBOX_KEY = "b3V0Ym94LWtleS1mb3ItdGVzdHMtMDEyMzQ1Njc4OWE="  # 32 bytes, base64
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
            "secrets": {"pepper": PEPPER, "index_key": INDEX_KEY, "outbox_key": OUTBOX_KEY},
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
        self._outboxes: list[QueueStore[OutboxEntry]] = []

    def watch(self, app: Litestar) -> Litestar:
        """Let ``sent()`` wait for this app's outbox to empty."""
        self._outboxes.append(app.state.runtime.stores.outbox)
        return app

    async def sent(self, within_s: float = 5.0) -> list[tuple[str, str, str]]:
        """The messages sent, once every watched outbox is empty (all delivered or settled)."""
        deadline = time.monotonic() + within_s
        while True:
            try:
                backlogs = [await outbox.backlog() for outbox in self._outboxes]
            except StoreUnavailable:
                return self.messages()  # Redis is down: nothing more can go out
            if all(b == (0, 0) for b in backlogs) or time.monotonic() > deadline:
                return self.messages()
            await asyncio.sleep(0.005)

    def messages(self) -> list[tuple[str, str, str]]:
        """(number, challenge id, code) of every message sent, in order."""
        return self._LINE.findall(self.stream.getvalue())

    async def code_for(self, challenge_id: str, within_s: float = 5.0) -> str:
        """The code sent for ``challenge_id``, once the delivery worker has sent it."""
        deadline = time.monotonic() + within_s
        while True:
            codes = [code for _, cid, code in self.messages() if cid == challenge_id]
            if codes or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.005)
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
    runtime = app.state.runtime
    await runtime.start()
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://otp.test") as client:
            yield client
    finally:
        await runtime.stop()


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
            app = phone.watch(create_app(settings, redis=redis, sms=phone.sender))
            return await stack.enter_async_context(running(app))

        yield start
