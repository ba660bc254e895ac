"""Connecting to the store: one Redis, a Redis Cluster, or the embedded in-memory server."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

if TYPE_CHECKING:
    from otpservice.config.schema import Settings

StoreClient = Redis | RedisCluster


def connect(settings: Settings) -> StoreClient:
    """A client for the configured store; nothing is sent until first use.

    Without ``redis.url`` (development mode only) this is the embedded fakeredis server, which
    runs the same Lua scripts through lupa.
    """
    if settings.redis.url is None:
        if not settings.dev_mode:
            raise AssertionError("the embedded store is for development mode only")
        import fakeredis  # imported here: only development mode needs it

        client: Redis = fakeredis.FakeAsyncRedis()
        return client
    options: dict[str, Any] = {
        # None, not redis-py's default of 5 s: StoreCommands puts one deadline on each command
        # (see scripts.py), and a socket timeout would add a task to every write.
        "socket_timeout": None,
        "socket_connect_timeout": settings.redis.connect_timeout_seconds,
        # One quick retry on a dropped connection (a Redis restart leaves stale pooled sockets).
        # Never on a timeout: the command may have run, and the scripts spend attempts and send
        # slots, so running one twice would count twice. A slow Redis is a 503 instead.
        "retry": Retry(
            ExponentialBackoff(cap=0.2, base=0.05),
            retries=1,
            supported_errors=(RedisConnectionError,),
        ),
        "retry_on_error": [RedisConnectionError],
    }
    if settings.secrets.redis_password:
        options["password"] = settings.secrets.redis_password
    if settings.redis.tls_ca_file:
        options["ssl_ca_certs"] = settings.redis.tls_ca_file
    if settings.redis.cluster:
        return RedisCluster.from_url(
            settings.redis.url, max_connections=settings.redis.max_connections, **options
        )
    # StoreCommands lets at most max_connections commands run at once (the rest wait their
    # turn), so the pool never runs out; its cap is a backstop.
    pool = ConnectionPool.from_url(
        settings.redis.url, max_connections=settings.redis.max_connections, **options
    )
    return Redis.from_pool(pool)  # the client owns the pool and closes it
