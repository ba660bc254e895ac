"""Sharded abuse counters: never more than the limit, close to it when spread, one key if small."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio.cluster import RedisCluster

from otpservice.app import create_app
from otpservice.config.schema import RateRule, Settings, Window
from otpservice.store import StoreClient, connect
from otpservice.store.quotas import QuotaStore, shard_count, shard_limits
from tests.support.app import Phone, cluster_client, running
from tests.support.servers.redis import RedisClusterServers, RedisServer

# Shares the Redis Cluster of the other cluster modules: one worker starts it.
pytestmark = pytest.mark.xdist_group("processes")


def rule(limit: int, seconds: int = 60, name: str = "global") -> RateRule:
    return RateRule(name=name, scope="global", windows=[Window(limit=limit, seconds=seconds)])


@pytest.fixture(params=["single", "cluster"])
async def quotas(
    request: pytest.FixtureRequest, make_settings: Callable[..., Settings], phone: Phone
) -> AsyncIterator[tuple[QuotaStore, StoreClient]]:
    """The service's own QuotaStore (16 shards), on one node, then on a cluster."""
    if request.param == "single":
        server: RedisServer = request.getfixturevalue("redis_server")
        settings = make_settings(server.url)
        client = connect(settings)
        await client.flushall()
    else:
        cluster: RedisClusterServers = request.getfixturevalue("redis_cluster_servers")
        await (await cluster_client(cluster)).aclose()
        settings = make_settings(cluster.url, redis={"url": cluster.url, "cluster": True})
        client = connect(settings)
        assert isinstance(client, RedisCluster)
    app = create_app(settings, redis=client, sms=phone.sender)
    async with running(app):  # started and stopped, so its script connections are closed
        yield app.state.runtime.stores.quotas, client
    await client.aclose()


def test_shares_sum_to_the_limit_and_small_rules_are_not_sharded() -> None:
    for limit in (19, 20, 41, 100, 301, 1000, 20000):
        count = shard_count(rule(limit), 16)
        assert count == min(16, max(1, limit // 20))
        assert sum(shard_limits(rule(limit), count, s)[0] for s in range(count)) == limit
    assert shard_count(rule(19), 16) == 1
    assert shard_count(rule(1000), 4) == 4


async def test_concurrent_requests_never_exceed_the_limit(
    quotas: tuple[QuotaStore, StoreClient],
) -> None:
    store, client = quotas
    limit = 100  # five shards of 20
    taken = await asyncio.gather(
        *(store.take(rule(limit), "all", f"r{i}") for i in range(4 * limit))
    )
    admitted = [t for t in taken if t.counted]
    assert len(admitted) <= limit
    # Sharded: the admissions are spread over the rule's five keys, each within its share.
    keys = store.keys(rule(limit), "all")
    assert len(keys) == 5
    assert {t.key for t in admitted} <= set(keys)
    assert len({t.key for t in admitted}) == 5
    for key in keys:
        assert await client.zcard(key) <= limit // 5
    # A refusal says when to retry, from the shards it tried.
    refused = [t for t in taken if not t.counted]
    assert refused
    assert all(0 < t.retry_after_ms <= 60_000 for t in refused)


async def test_requests_spread_over_two_windows_are_nearly_all_admitted(
    quotas: tuple[QuotaStore, StoreClient],
) -> None:
    store, _ = quotas
    limit, window_s = 100, 1
    admitted = 0
    start = time.monotonic()
    for batch in range(10):  # L requests over two windows: about L/2 in any one window
        taken = await asyncio.gather(
            *(store.take(rule(limit, window_s), "all", f"b{batch}-{i}") for i in range(limit // 10))
        )
        admitted += sum(t.counted for t in taken)
        await asyncio.sleep(max(0.0, start + (batch + 1) * 2 * window_s / 10 - time.monotonic()))
    assert admitted >= 0.95 * limit


async def test_a_rule_under_twenty_uses_its_one_plain_key(
    quotas: tuple[QuotaStore, StoreClient],
) -> None:
    store, client = quotas
    small = rule(19, name="per_ip")
    taken = await asyncio.gather(*(store.take(small, "203.0.113.7", f"r{i}") for i in range(40)))
    assert sum(t.counted for t in taken) == 19
    (key,) = store.keys(small, "203.0.113.7")
    assert await client.zcard(key) == 19
    assert key.endswith("}")
    assert ":" not in key.rsplit(":", 1)[-1]


async def test_monitor_mode_counts_past_the_limit(
    quotas: tuple[QuotaStore, StoreClient],
) -> None:
    store, _ = quotas
    watched = RateRule(
        name="global", scope="global", mode="monitor", windows=[Window(limit=40, seconds=60)]
    )
    taken = [await store.take(watched, "all", f"m{i}") for i in range(60)]
    assert all(t.counted for t in taken)
    assert sum(t.full for t in taken) >= 20  # the ones an enforcing rule would have refused
