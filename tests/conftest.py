"""Fixtures: a real redis-server per session (and a real cluster where asked), settings, apps,
fake providers and the login app's callback endpoint. Helpers live in tests/support/."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
from litestar import Litestar
from redis.asyncio import Redis

from otpservice.app import create_app
from otpservice.config.schema import Settings
from otpservice.store import connect
from otpservice.validation import load_settings
from tests.support.app import (
    INDEX_KEY,
    LIGHT_HASHING,
    OUTBOX_KEY,
    PEPPER,
    TOTP_KEY,
    ApiFactory,
    Phone,
    running,
)
from tests.support.delivery import (
    StartApi,
    StartApp,
)
from tests.support.processes import ServiceProcess
from tests.support.servers.providers import (
    FakeAcs,
    FakeApp,
    FakeGateway,
    FakeTwilio,
)
from tests.support.servers.redis import RedisClusterServers, RedisServer


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
            "secrets": {
                "pepper": PEPPER,
                "index_key": INDEX_KEY,
                "outbox_key": OUTBOX_KEY,
                "totp_key": TOTP_KEY,
            },
            "hashing": dict(LIGHT_HASHING),
            # The tests read codes from the console sender, as a developer would; they hash
            # lightly and loosen the limits they test around.
            "unsafe": {"allow_console_sender": True, "allow_weak_limits": True},
        }
        for section, value in overrides.items():
            if isinstance(value, dict) and isinstance(raw.get(section), dict):
                raw[section] = {**raw[section], **value}
            else:
                raw[section] = value
        return load_settings(environ={}, overrides=raw)

    return build


@pytest.fixture
def phone() -> Phone:
    return Phone()


@pytest.fixture
async def api(make_api: ApiFactory) -> httpx.AsyncClient:
    """The app on the session's Redis, with default limits and light hashing."""
    client: httpx.AsyncClient = await make_api()
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


@pytest.fixture
def acs() -> Iterator[FakeAcs]:
    server = FakeAcs()
    yield server
    server.close()


@pytest.fixture
def twilio() -> Iterator[FakeTwilio]:
    server = FakeTwilio()
    yield server
    server.close()


@pytest.fixture
def gateway() -> Iterator[FakeGateway]:
    server = FakeGateway()
    yield server
    server.close()


@pytest.fixture
async def start_app(
    redis: Redis, redis_server: RedisServer, make_settings: Callable[..., Settings]
) -> AsyncIterator[StartApp]:
    """Apps whose SMS go through the providers given (as config entries), and their clients."""
    async with AsyncExitStack() as stack:

        async def start(
            *providers: dict[str, Any], sms: dict[str, Any] | None = None, **overrides: Any
        ) -> tuple[httpx.AsyncClient, Litestar]:
            settings = make_settings(
                redis_server.url,
                sms={**(sms or {}), "providers": list(providers)},
                public_base_url="https://otp.example.com",
                **overrides,
            )
            app = create_app(settings, redis=redis)
            return await stack.enter_async_context(running(app)), app

        yield start


@pytest.fixture
def start_api(start_app: StartApp) -> StartApi:
    """Like ``start_app``, the client only."""

    async def start(*providers: dict[str, Any], **overrides: Any) -> httpx.AsyncClient:
        api, _ = await start_app(*providers, **overrides)
        return api

    return start


@pytest.fixture
def app_endpoint() -> Iterator[FakeApp]:
    """The login app's callback endpoint, checking signatures as an app would."""
    server = FakeApp()
    yield server
    server.close()


@pytest.fixture
def dev_service() -> Iterator[ServiceProcess]:
    """``otpservice serve --dev`` as a process on a free port."""
    service = ServiceProcess("--dev")
    yield service
    if not service.stopped:
        service.stop()
