"""Connecting to the store: one Redis, Redis behind Sentinel, a Redis Cluster, or the embedded
in-memory server."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
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
    if settings.redis.sentinel is not None:
        return _through_sentinel(settings)
    if settings.redis.url is None:
        if not settings.dev_mode:
            raise AssertionError("the embedded store is for development mode only")
        import fakeredis  # imported here: only development mode needs it

        client: Redis = fakeredis.FakeAsyncRedis()
        return client
    options = _options(settings)
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


def _through_sentinel(settings: Settings) -> Redis:
    """The master that the sentinels name, found again whenever a connection to it fails.

    redis-py's Sentinel pool asks the sentinels for the master on every new connection, drops
    its idle connections when the answer changes, and turns a ``READONLY`` reply (the old
    master, now a replica) into a connection error: the command is a 503, the next one goes to
    the new master. No master found is a connection error too.
    """
    sentinel = settings.redis.sentinel
    assert sentinel is not None
    options = _options(settings)
    own: dict[str, Any] = {
        "socket_timeout": settings.redis.connect_timeout_seconds,
        "socket_connect_timeout": settings.redis.connect_timeout_seconds,
    }
    if settings.secrets.redis_sentinel_password:
        own["password"] = settings.secrets.redis_sentinel_password
    if sentinel.username:
        own["username"] = sentinel.username
    if sentinel.tls:
        tls: dict[str, Any] = {"ssl": True}
        if settings.redis.tls_ca_file:
            tls["ssl_ca_certs"] = settings.redis.tls_ca_file
        own.update(tls)
        options.update(tls)
    manager = Sentinel(sentinel.addresses(), sentinel_kwargs=own, **options)  # type: ignore[no-untyped-call]
    client: Redis = manager.master_for(
        sentinel.master_name,
        redis_class=SentinelMaster,
        max_connections=settings.redis.max_connections,
    )
    return client


class SentinelMaster(Redis):
    """The master's client; closing it closes the connections to the sentinels too (redis-py
    leaves those open)."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        """Close the master's pool, then each sentinel's client."""
        await super().aclose(close_connection_pool)
        manager = getattr(self.connection_pool, "sentinel_manager", None)
        for sentinel in getattr(manager, "sentinels", []):
            await sentinel.aclose()


def _options(settings: Settings) -> dict[str, Any]:
    """What every connection to the store is made with."""
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
    if settings.redis.tls_ca_file and settings.redis.sentinel is None:
        options["ssl_ca_certs"] = settings.redis.tls_ca_file
    return options
