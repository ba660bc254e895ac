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
call the same). Redis Cluster and the embedded store keep redis-py's path, for its routing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import hiredis
from redis.asyncio.sentinel import SentinelManagedConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, NoScriptError, ResponseError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from redis.asyncio import ConnectionPool
    from redis.asyncio.connection import AbstractConnection
    from redis.commands.core import AsyncScript


def _pack(command: tuple[Any, ...]) -> bytes:
    try:
        # The stub types the argument as a one-element tuple; any length is accepted.
        packed: bytes = hiredis.pack_command(cast("Any", command))
    except TypeError as exc:  # what redis-py's own encoder calls a DataError
        raise DataError(str(exc)) from exc
    return packed


class ScriptConnections:
    """Runs scripts on one Redis over connections made by its client's pool.

    They are not the pool's: ``close()`` closes them. At most one per command in flight is ever
    made, and ``StoreCommands`` caps those at ``redis.max_connections``.
    """

    def __init__(self, pool: ConnectionPool) -> None:
        self._connect: Callable[[], AbstractConnection] = pool.make_connection
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

    async def close(self) -> None:
        """Close the idle connections; any still in use are closed as they come back.

        Without waiting for each socket to finish closing: a silent server (TLS) would make each
        wait last the connect timeout.
        """
        self._closed = True
        while self._idle:
            await self._idle.pop().disconnect(nowait=True)

    async def _send(self, command: bytes, replies: int = 1) -> Any:
        """Send packed commands and read their ``replies`` (one: the reply; more: a list); once
        more, on a new connection, when a reused one turns out to be dropped."""
        reused = bool(self._idle)
        connection = self._idle.pop() if reused else self._connect()
        try:
            return await self._exchange(connection, command, replies)
        except RedisConnectionError:
            if not reused:
                raise
        # Each other stale idle connection costs its own caller one quick failed send the same
        # way: cheaper than closing them all here, inside this caller's deadline.
        return await self._exchange(self._connect(), command, replies)

    async def _exchange(self, connection: AbstractConnection, command: bytes, replies: int) -> Any:
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
                    answers.append(None)
        except BaseException:
            # Never reused: dropped, or cut off (by the deadline) with its reply still due.
            # redis-py has closed it already unless it was cut off while connecting.
            await connection.disconnect(nowait=True)
            raise
        await self._put_back(connection)
        if error is not None:
            raise error
        return answers[0] if replies == 1 else answers

    async def _put_back(self, connection: AbstractConnection) -> None:
        if self._closed:
            await connection.disconnect(nowait=True)
        else:
            self._idle.append(connection)
