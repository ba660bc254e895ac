"""Helpers shared by the HTTP-level tests (no tests in here)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

if TYPE_CHECKING:
    from tests.support.app import Phone

PHONE = "+14155550123"
Client = httpx.AsyncClient


async def issue(api: Client, phone_number: str = PHONE, **extra: Any) -> dict[str, Any]:
    response = await api.post("/challenge", json={"phone": phone_number, **extra})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def challenge(api: Client, number: str, ip: str | None = None) -> httpx.Response:
    """``POST /challenge`` for ``number``, from end-user address ``ip`` when given."""
    body = {"phone": number} | ({"client_ip": ip} if ip else {})
    return await api.post("/challenge", json=body)


async def issue_code(api: Client, phone: Phone, phone_number: str = PHONE) -> tuple[str, str]:
    """Issue a challenge and return its id with the code the phone received."""
    challenge_id: str = (await issue(api, phone_number))["challenge_id"]
    return challenge_id, await phone.code_for(challenge_id)


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 10 ** len(code):0{len(code)}d}"


def assert_problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    assert body["status"] == status
    assert "Traceback" not in response.text
    return body


async def wait_until(condition: Callable[[], bool], within_s: float = 5.0) -> None:
    """Poll ``condition`` until it holds or the time is up (the caller asserts after)."""
    deadline = time.monotonic() + within_s
    while not condition() and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.005)


T = TypeVar("T")


async def wait_until_async(
    read: Callable[[], Awaitable[T]], done: Callable[[T], bool], within_s: float = 5.0
) -> T:
    """What ``read`` gives once ``done`` says so (or the last value after ``within_s``)."""
    for _ in range(int(within_s / 0.05)):
        value = await read()
        if done(value):
            return value
        await asyncio.sleep(0.05)
    return value


def api_tokens(tokens: dict[str, str], scopes: dict[str, list[str]]) -> list[dict[str, Any]]:
    """``api_tokens`` settings for these clients' tokens and scopes."""
    return [
        {
            "client": name,
            "token_sha256": hashlib.sha256(token.encode()).hexdigest(),
            "scopes": scopes[name],
        }
        for name, token in tokens.items()
    ]


async def stored_bytes(redis: Any, pattern: str) -> bytes:
    """Every key matching ``pattern`` and everything in it, read by type (so nothing hides in
    an encoding), joined: what a Redis dump would show of them."""
    found = b""
    async for key in redis.scan_iter(pattern):
        kind = (await redis.type(key)).decode()
        if kind == "hash":
            parts = [b for pair in (await redis.hgetall(key)).items() for b in pair]
        elif kind == "zset":
            parts = list(await redis.zrange(key, 0, -1))
        elif kind == "list":
            parts = list(await redis.lrange(key, 0, -1))
        elif kind == "set":
            parts = list(await redis.smembers(key))
        elif kind == "stream":
            parts = [b for _, f in await redis.xrange(key) for pair in f.items() for b in pair]
        else:
            parts = [await redis.get(key) or b""]
        found += key + b"\0" + b"\0".join(parts) + b"\n"
    return found
