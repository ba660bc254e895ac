"""Connecting to the store: one Redis, a Redis Cluster, or the embedded in-memory server."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

if TYPE_CHECKING:
    from otpservice.settings import Settings

StoreClient = Redis | RedisCluster


def connect(settings: Settings) -> StoreClient:
    """A client for the configured store; nothing is sent until first use.

    Without ``redis.url`` (development mode only) this is the embedded fakeredis server, which
    runs the same Lua scripts through lupa.
    """
    if settings.redis.url is None:
        if not settings.dev_mode:
            raise AssertionError("the embedded store is for development mode only")
        import fakeredis

        client: Redis = fakeredis.FakeAsyncRedis()
        return client
    options: dict[str, Any] = {
        "socket_timeout": settings.redis.socket_timeout_seconds,
        "socket_connect_timeout": settings.redis.connect_timeout_seconds,
        # One quick retry on a dropped connection (a Redis restart leaves stale pooled sockets);
        # a Redis that stays down fails fast into 503 store_unavailable.
        "retry": Retry(ExponentialBackoff(cap=0.2, base=0.05), retries=1),
        "retry_on_error": [RedisConnectionError],
    }
    if settings.secrets.redis_password:
        options["password"] = settings.secrets.redis_password
    if settings.redis.cluster:
        return RedisCluster.from_url(settings.redis.url, **options)
    return Redis.from_url(settings.redis.url, **options)
