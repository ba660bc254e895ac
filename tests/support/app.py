"""Helpers for tests of the app: test secrets, the phone that reads console SMS, running an app."""

from __future__ import annotations

import asyncio
import io
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
from litestar import Litestar
from redis.asyncio.cluster import RedisCluster

from otpservice.errors import StoreUnavailable
from otpservice.models import OutboxEntry
from otpservice.sms.console import ConsoleSender
from otpservice.store.queues import QueueStore
from tests.support.servers.redis import RedisClusterServers
from tests.support.spec import DocumentedProblems

ApiFactory = Callable[..., Any]


PEPPER = "test-pepper-0123456789abcdef"


OUTBOX_KEY = "b3V0Ym94LWtleS1mb3ItdGVzdHMtMDEyMzQ1Njc4OWE="  # 32 bytes, base64
TOTP_KEY = "dG90cC1rZXktZm9yLXRoZS10ZXN0cy05ODc2NTQzMjE="  # 32 bytes, base64


INDEX_KEY = "test-index-key-0123456789abcdef"


# Light argon2 so the suite runs fast; tests about the default profile ask for it.
LIGHT_HASHING = {"memory_kib": 1024, "time_cost": 1}


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


@asynccontextmanager
async def running(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    """Start the app's service and call the app over HTTP in this event loop.

    What the app's lifespan does (start, close) is done here directly: its task group cannot be
    entered in one fixture task and left in another.
    """
    runtime = app.state.runtime
    await runtime.start()
    transport = httpx.ASGITransport(app=app)
    hooks = {"response": [DocumentedProblems(app)]}
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://otp.test", event_hooks=hooks
        ) as client:
            yield client
    finally:
        await runtime.stop()


async def cluster_client(cluster: RedisClusterServers) -> RedisCluster:
    """A cluster client with every node emptied first."""
    client = RedisCluster.from_url(cluster.url)
    await client.flushall(target_nodes=RedisCluster.PRIMARIES)
    return client
