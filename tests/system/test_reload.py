"""Tuning without a redeploy: the config file is re-read when it changes, or on SIGHUP."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from otpservice.app import create_app
from otpservice.validation import load_settings
from tests.support.app import INDEX_KEY, OUTBOX_KEY, PEPPER, Phone, running
from tests.support.helpers import assert_problem
from tests.support.servers.redis import RedisServer

IP = "192.0.2.10"


def config_text(redis_url: str, per_ip: int | str) -> str:
    return f"""
[redis]
url = "{redis_url}"
[secrets]
pepper = "{PEPPER}"
index_key = "{INDEX_KEY}"
outbox_key = "{OUTBOX_KEY}"
[hashing]
memory_kib = 1024
time_cost = 1
[unsafe]
allow_console_sender = true
allow_weak_limits = true
[abuse.fraud_guard]
enabled = false
[[abuse.rules]]
name = "per_ip"
scope = "ip"
windows = [{{limit = {per_ip}, seconds = 3600}}]
"""


async def sends_allowed(api: httpx.AsyncClient, start: int) -> int:
    """How many challenges from IP go through, up to 3 (different numbers each time)."""
    allowed = 0
    for n in range(start, start + 3):
        response = await api.post("/challenge", json={"phone": f"+1415555{n:04d}", "client_ip": IP})
        if response.status_code != 201:
            assert_problem(response, 429, "rate_limited")
            break
        allowed += 1
    return allowed


@pytest.fixture
async def configured(
    tmp_path: Path, redis: Redis, redis_server: RedisServer, phone: Phone
) -> AsyncIterator[tuple[httpx.AsyncClient, Path]]:
    """An app started from a ConfigMap-like directory: otp.toml -> ..data/otp.toml."""
    version = tmp_path / "..v1"
    version.mkdir()
    replace_file(version / "otp.toml", config_text(redis_server.url, 1))
    (tmp_path / "..data").symlink_to(version.name)
    (tmp_path / "otp.toml").symlink_to("..data/otp.toml")
    settings = load_settings(tmp_path / "otp.toml", environ={})
    app = create_app(settings, redis=redis, sms=phone.sender)
    async with running(app) as api:
        yield api, tmp_path


def _refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    # Errors of the settings only: other loggers' records, and the settings' own info lines
    # (a logging set-up elsewhere in the process may let them through), are not refusals.
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "otpservice.live_settings" and r.levelno >= logging.ERROR
    ]


async def refused(caplog: pytest.LogCaptureFixture) -> None:
    """Wait (6 s at most) until the settings watcher has logged a refusal."""
    for _ in range(30):
        if _refusals(caplog):
            return
        await asyncio.sleep(0.2)


def refusals(caplog: pytest.LogCaptureFixture, *words: str) -> bool:
    """Whether the reload was refused, every refusal logged saying ``words`` (a busy machine
    may see the bad file twice)."""
    found = _refusals(caplog)
    return bool(found) and all(word in message for message in found for word in words)


def replace_file(path: Path, text: str) -> None:
    """Write ``path`` whole at once (a rename), so the watcher never reads it half written."""
    staged = path.with_name(path.name + ".tmp")
    staged.write_text(text)
    staged.replace(path)


async def test_a_changed_config_map_applies_and_a_bad_one_is_refused(
    configured: tuple[httpx.AsyncClient, Path], redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    api, directory = configured
    assert await sends_allowed(api, 100) == 1

    # Kubernetes writes a new version directory and swaps the ..data symlink.
    version = directory / "..v2"
    version.mkdir()
    replace_file(
        version / "otp.toml",
        (directory / "..v1" / "otp.toml").read_text().replace("limit = 1,", "limit = 3,"),
    )
    (directory / "..data.tmp").symlink_to(version.name)
    (directory / "..data.tmp").rename(directory / "..data")
    for attempt in range(30):
        await redis.delete(*(await redis.keys("otp:{q:*")) or ["none"])
        if await sends_allowed(api, 200 + attempt * 10) == 3:
            break
        await asyncio.sleep(0.2)
    else:
        pytest.fail("the new limit did not apply")

    with caplog.at_level(logging.ERROR, logger="otpservice.live_settings"):
        replace_file(
            version / "otp.toml",
            (version / "otp.toml").read_text().replace("limit = 3,", 'limit = "lots",'),
        )
        await refused(caplog)
    assert refusals(caplog, "abuse.rules[0].windows[0].limit")
    await redis.delete(*(await redis.keys("otp:{q:*")) or ["none"])
    assert await sends_allowed(api, 600) == 3  # the settings in force stayed

    # A reload that drops the acknowledgement of the light hashing is refused as well.
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="otpservice.live_settings"):
        replace_file(
            version / "otp.toml",
            (version / "otp.toml")
            .read_text()
            .replace('limit = "lots",', "limit = 2,")
            .replace("allow_weak_limits = true\n", ""),
        )
        await refused(caplog)
    assert refusals(caplog, "hashing.memory_kib", "allow_weak_limits")
    await redis.delete(*(await redis.keys("otp:{q:*")) or ["none"])
    assert await sends_allowed(api, 700) == 3  # still the limit of 3
