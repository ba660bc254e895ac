"""Helpers for delivery tests: provider entries for the settings, what a provider got."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from litestar import Litestar
from redis.asyncio import Redis

from otpservice.config.schema import RedisSettings
from otpservice.runtime import Runtime
from otpservice.workers.delivery import DeliveryWorker
from tests.support.helpers import PHONE, wait_until
from tests.support.servers.providers import (
    GATEWAY_SECRET,
    TWILIO_SID,
    TWILIO_TOKEN,
    FakeAcs,
    FakeGateway,
    FakeProvider,
    FakeTwilio,
)

ACS_FROM = "+18005550100"


TWILIO_FROM = "+15005550006"


TIMEOUT = 0.5


FAST_RETRIES = {"retry_base_seconds": 0.05, "retry_max_seconds": 0.1}


StartApi = Callable[..., Awaitable[httpx.AsyncClient]]


StartApp = Callable[..., Awaitable[tuple[httpx.AsyncClient, Litestar]]]


FINAL = {"sent", "unknown", "delivered", "undelivered", "failed"}


def acs_entry(server: FakeAcs, **extra: Any) -> dict[str, Any]:
    return {
        "type": "acs",
        "connection_string": server.connection_string,
        "from_number": ACS_FROM,
        "timeout_seconds": TIMEOUT,
        **extra,
    }


def twilio_entry(server: FakeTwilio | str, **extra: Any) -> dict[str, Any]:
    url = server if isinstance(server, str) else server.url
    return {
        "type": "twilio",
        "account_sid": TWILIO_SID,
        "auth_token": TWILIO_TOKEN,
        "from_number": TWILIO_FROM,
        "api_base_url": url,
        "timeout_seconds": TIMEOUT,
        **extra,
    }


def gateway_entry(server: FakeGateway, **extra: Any) -> dict[str, Any]:
    return {
        "type": "generic",
        "url": f"{server.url}/send",
        "secret": GATEWAY_SECRET,
        "timeout_seconds": TIMEOUT,
        **extra,
    }


async def delivered_to(server: FakeProvider, count: int = 1) -> list[str]:
    """The numbers the provider delivered to, once it has ``count`` (5 s at most)."""
    await wait_until(lambda: len(server.delivered) >= count)
    return [m.to for m in server.delivered]


async def delivery(api: httpx.AsyncClient, challenge_id: str) -> dict[str, Any]:
    """The challenge's delivery state once it is final (or after 5 s)."""
    for _ in range(500):
        state: dict[str, Any] = (await api.get(f"/challenge/{challenge_id}")).json()["delivery"]
        if state["status"] in FINAL:
            return state
        await asyncio.sleep(0.01)
    return state


def code_in(server: FakeProvider) -> str:
    match = re.search(r"\b(\d{6})\b", server.delivered[-1].body)
    assert match, server.delivered[-1].body
    return match.group(1)


async def verify(api: httpx.AsyncClient, challenge_id: str, code: str) -> httpx.Response:
    return await api.post("/verify", json={"challenge_id": challenge_id, "code": code})


async def issue(api: httpx.AsyncClient, phone: str = PHONE) -> str:
    response = await api.post("/challenge", json={"phone": phone})
    assert response.status_code == 201, response.text
    challenge_id: str = response.json()["challenge_id"]
    return challenge_id


MANUAL = {"workers_in_process": False, "claim_idle_seconds": 1}
# The default redis.queue_shards, which the tests' settings keep.
QUEUE_SHARDS = RedisSettings().queue_shards


def queue_keys(name: str, kind: str = "stream") -> list[str]:
    """The keys of queue ``name``'s shards ("stream" or "delayed"), for tests' settings."""
    return [f"otp:{{{name}:{shard}}}:{kind}" for shard in range(QUEUE_SHARDS)]


async def queued(redis: Redis, name: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """Every entry in queue ``name``'s shard streams."""
    entries = []
    for key in queue_keys(name):
        entries += await redis.xrange(key)
    return entries


async def deliver(runtime: Runtime, worker: DeliveryWorker | None = None) -> int:
    """One pass of a worker, waiting for the sends it started."""
    worker = worker or runtime.worker
    started = await worker.run_once()
    await worker.drain()
    return started
