"""Lua scripts on one Redis, sent straight down connections of their own.

Every request runs its scripts through here (``StoreCommands.run_script``). redis-py's own path
for a script (``AsyncScript``, ``execute_command``, its retry wrapper, the connection pool with its
lock, events and metrics hooks, a command encoder in Python) cost the event loop about 55 µs per
call; this one, with hiredis's encoder and a plain list of idle connections, about 15 µs. That is
about a quarter more ``/verify`` requests a second with hashing off (see ``bench/``).

What matters of redis-py's behaviour is kept: the connections are redis-py's own, made by the
client's pool (same address, password, TLS, connect timeout and connect retry); NOSCRIPT loads the
script and runs it again; a reused connection found dropped (a restarted Redis leaves them stale)
is tried once more on a new one, which the scripts tolerate (each answers a repeat of the same
call the same).

On Redis Cluster, ``ClusterScriptConnections`` keeps one such set per primary, made from
redis-py's node settings, and sends each script to the primary of its keys' slot by redis-py's
slot map: the same fast path, and a ``WAIT`` after a script is on the script's connection. A
``MOVED`` (the slot moved: a failover, a resharding) is followed once to the node it names; it,
a lost connection or a cluster error also has the slot map read again, in the background. The
embedded store keeps redis-py's path.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from typing import TYPE_CHECKING, Any, cast

import hiredis
from redis.asyncio.sentinel import SentinelManagedConnection
from redis.exceptions import (
    AskError,
    ClusterDownError,
    DataError,
    MovedError,
    NoScriptError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from redis.asyncio.cluster import RedisCluster
    from redis.asyncio.connection import AbstractConnection
    from redis.commands.core import AsyncScript

log = logging.getLogger("otpservice.store")

# Errors after which the slot map is read again: the node is gone, demoted, or the cluster is
# rearranging itself.
_MAP_CHANGED = (
    AskError,
    ClusterDownError,
    ReadOnlyError,
    RedisConnectionError,
    RedisTimeoutError,
    TimeoutError,
    TryAgainError,
)
# The least time between two readings of the slot map.
MAP_REFRESH_SECONDS = 0.5


def _pack(command: tuple[Any, ...]) -> bytes:
    try:
        # The stub types the argument as a one-element tuple; any length is accepted.
        packed: bytes = hiredis.pack_command(cast("Any", command))
    except TypeError as exc:  # what redis-py's own encoder calls a DataError
        raise DataError(str(exc)) from exc
    return packed


class ScriptConnections:
    """Runs scripts on one Redis over connections made by ``connect`` (its client's pool's
    ``make_connection``, or a cluster node's connection class with its settings).

    They are not the pool's: ``close()`` closes them. At most one per command in flight is ever
    made, and ``StoreCommands`` caps those at ``redis.max_connections``.
    """

    def __init__(self, connect: Callable[[], AbstractConnection]) -> None:
        self._connect = connect
        self._idle: list[AbstractConnection] = []
        self._closed = False

    async def evalsha(self, script: AsyncScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run ``script`` with ``keys`` and ``args`` and return its reply.

        Raises:
            redis-py's errors, as its own path would (``ResponseError``, ``ConnectionError``, ...).
        """
        command = _pack(("EVALSHA", script.sha, len(keys), *keys, *args))
        try:
            return await self._send(command)
        except NoScriptError:
            # Flushed, or Redis restarted: load it and run it again, as redis-py's Script does.
            await self._send(_pack(("SCRIPT", "LOAD", script.script)))
            return await self._send(command)

    async def evalsha_and_wait(
        self,
        script: AsyncScript,
        keys: Sequence[str],
        args: Sequence[Any],
        *,
        replicas: int,
        timeout_ms: int,
    ) -> tuple[Any, int]:
        """Run ``script``, then ``WAIT replicas timeout_ms`` in the same pipeline, on the same
        connection: the script's reply and how many replicas have its writes.

        A WAIT anywhere else (another pooled connection) would answer at once with the replicas'
        count and prove nothing about this write.
        """
        command = _pack(("EVALSHA", script.sha, len(keys), *keys, *args)) + _pack(
            ("WAIT", replicas, timeout_ms)
        )
        try:
            reply, acked = await self._send(command, replies=2)
        except NoScriptError:
            # The WAIT after a NOSCRIPT waited for nothing: load, then send both again.
            await self._send(_pack(("SCRIPT", "LOAD", script.script)))
            reply, acked = await self._send(command, replies=2)
        return reply, int(acked)

    async def pipeline(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Send ``commands`` in one round trip; their replies in order, an error reply as its
        ``ResponseError`` (a value, not raised)."""
        packed = b"".join(_pack(command) for command in commands)
        replies: list[Any] = await self._send(packed, replies=len(commands), errors_as_values=True)
        return replies

    async def close(self) -> None:
        """Close the idle connections; any still in use are closed as they come back.

        Without waiting for each socket to finish closing: a silent server (TLS) would make each
        wait last the connect timeout.
        """
        self._closed = True
        while self._idle:
            await self._idle.pop().disconnect(nowait=True)

    async def _send(
        self, command: bytes, replies: int = 1, *, errors_as_values: bool = False
    ) -> Any:
        """Send packed commands and read their ``replies`` (one: the reply; more, or
        ``errors_as_values``: a list); once more, on a new connection, when a reused one turns
        out to be dropped."""
        reused = bool(self._idle)
        connection = self._idle.pop() if reused else self._connect()
        try:
            return await self._exchange(connection, command, replies, errors_as_values)
        except RedisConnectionError:
            if not reused:
                raise
        # Each other stale idle connection costs its own caller one quick failed send the same
        # way: cheaper than closing them all here, inside this caller's deadline.
        return await self._exchange(self._connect(), command, replies, errors_as_values)

    async def _exchange(
        self,
        connection: AbstractConnection,
        command: bytes,
        replies: int,
        errors_as_values: bool = False,
    ) -> Any:
        answers: list[Any] = []
        error: ResponseError | None = None
        try:
            if isinstance(connection, SentinelManagedConnection) and not connection.is_connected:
                # Only its own connect() asks the sentinels for the master: send_packed_command
                # would connect it to its default address (localhost:6379) instead.
                await connection.connect()  # type: ignore[no-untyped-call]
            await connection.send_packed_command(command, check_health=False)
            for _ in range(replies):
                try:
                    answers.append(await connection.read_response())
                except ResponseError as exc:
                    # An error reply: the connection is sound; the replies after it still come.
                    error = error or exc
                    answers.append(exc if errors_as_values else None)
        except BaseException:
            # Never reused: dropped, or cut off (by the deadline) with its reply still due.
            # redis-py has closed it already unless it was cut off while connecting.
            await connection.disconnect(nowait=True)
            raise
        await self._put_back(connection)
        if errors_as_values:
            return answers
        if error is not None:
            raise error
        return answers[0] if replies == 1 else answers

    async def _put_back(self, connection: AbstractConnection) -> None:
        if self._closed:
            await connection.disconnect(nowait=True)
        else:
            self._idle.append(connection)


class ClusterScriptConnections:
    """Runs scripts on Redis Cluster: on ``ScriptConnections`` of the primary serving the
    slot of their keys (one slot per script, as every script here is written)."""

    def __init__(self, client: RedisCluster) -> None:
        self._client = client
        self._nodes: dict[str, ScriptConnections] = {}
        self._refresh: asyncio.Task[None] | None = None
        self._refreshed_at = 0.0

    async def evalsha(self, script: AsyncScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """As ``ScriptConnections.evalsha``, on the primary of ``keys``' slot."""
        return await self._routed(keys[0], lambda node: node.evalsha(script, keys, args))

    async def evalsha_and_wait(
        self,
        script: AsyncScript,
        keys: Sequence[str],
        args: Sequence[Any],
        *,
        replicas: int,
        timeout_ms: int,
    ) -> tuple[Any, int]:
        """As ``ScriptConnections.evalsha_and_wait``, on the primary of ``keys``' slot."""
        reply, acked = await self._routed(
            keys[0],
            lambda node: node.evalsha_and_wait(
                script, keys, args, replicas=replicas, timeout_ms=timeout_ms
            ),
        )
        return reply, int(acked)

    async def pipeline(self, key: str, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """As ``ScriptConnections.pipeline``, on the primary of ``key``'s slot (every command's
        keys must be there)."""
        replies: list[Any] = await self._routed(key, lambda node: node.pipeline(commands))
        if any(isinstance(reply, AskError) for reply in replies):
            self._read_map_again()  # those commands were not run: the map is out of date
        return replies

    def node_of(self, key: str) -> str:
        """The name of the primary serving ``key``'s slot ("" when the map has none)."""
        node = self._client.get_node_from_key(key)
        return node.name if node is not None else ""

    async def close(self) -> None:
        """Close every node's connections, and stop a slot-map reading in progress."""
        if self._refresh is not None:
            self._refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError, RedisError, RedisClusterException):
                await self._refresh
        for node in self._nodes.values():
            await node.close()

    async def _routed(self, key: str, call: Callable[[ScriptConnections], Awaitable[Any]]) -> Any:
        node = self._client.get_node_from_key(key)
        if node is None:
            self._read_map_again()
            raise ClusterDownError("no node serves the slot of the script's keys")
        try:
            return await call(self._for(node.name, node.connection_class, node.connection_kwargs))
        except MovedError as moved:
            # The script did not run there. Follow the redirection once, and learn the new map.
            self._read_map_again()
            target = self._client.get_node(host=moved.host, port=moved.port)
            if target is None:
                where = f"{moved.host}:{moved.port}"
                raise ClusterDownError(f"the slot moved to {where}, not yet known") from moved
            return await call(
                self._for(target.name, target.connection_class, target.connection_kwargs)
            )
        except _MAP_CHANGED:
            self._read_map_again()
            raise

    def _for(
        self,
        name: str,
        connection_class: Callable[..., AbstractConnection],
        connection_kwargs: dict[str, Any],
    ) -> ScriptConnections:
        connections = self._nodes.get(name)
        if connections is None:
            connect = functools.partial(connection_class, **connection_kwargs)
            connections = self._nodes[name] = ScriptConnections(connect)
        return connections

    def _read_map_again(self) -> None:
        """Have the cluster client read the slot map again, once at a time, at most every
        ``MAP_REFRESH_SECONDS``: the scripts that fail meanwhile are 503s."""
        if self._refresh is not None and not self._refresh.done():
            return
        if time.monotonic() - self._refreshed_at < MAP_REFRESH_SECONDS:
            return
        self._refreshed_at = time.monotonic()
        self._refresh = asyncio.create_task(self._initialize())

    async def _initialize(self) -> None:
        try:
            await self._client.nodes_manager.initialize()
        except (RedisError, RedisClusterException) as exc:
            log.warning("store: the cluster's slot map could not be read (%s)", exc)
