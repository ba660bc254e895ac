"""How commands reach the store, and the Lua scripts, loaded from ``lua/*.lua``.

Every command goes through ``StoreCommands``: one deadline per command, a cap on commands in
flight, and Redis trouble turned into ``StoreUnavailable``. The deadline is ours
(``asyncio.timeout``) rather than redis-py's ``socket_timeout``, which wraps every socket write in
a new task, and its blocking pool's, which adds a second timer. A command cut off by the deadline
disconnects its connection (redis-py drops a connection whose reply was not read), so no stale
reply is ever read.

Scripts run by EVALSHA and are loaded again on NOSCRIPT, so a ``SCRIPT FLUSH`` or a Redis restart
is survived: on one Redis through ``ScriptConnections`` (every request's hot path, without
redis-py's command layers), on a cluster or the embedded store through redis-py's registered
scripts. The challenge scripts and ``take_quota`` get the shared
``_prelude.lua`` in front of them, so their status rules, clock and rolling-window check are
written once; the authenticator-app scripts get ``_totp.lua`` after it (the subject's guard).
"""

from __future__ import annotations

import asyncio
import contextlib
from importlib import resources
from typing import TYPE_CHECKING, Any, Literal

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import (
    AskError,
    AuthenticationError,
    BusyLoadingError,
    ClusterDownError,
    MasterDownError,
    NoPermissionError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from otpservice.errors import StoreUnavailable
from otpservice.store.script_connections import ClusterScriptConnections, ScriptConnections

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator, Sequence

    from redis.commands.core import AsyncScript

    from otpservice.config.schema import RedisSettings
    from otpservice.store.client import StoreClient

# Replies that mean "cannot serve now", not "bug": a wrong password or missing permission (an
# operator fixes it), memory full, snapshots failing, read-only replica, loading, cluster
# resharding or down, a long script running, no replicas to acknowledge.
_TRANSIENT_ERRORS = (
    AskError,  # and MOVED: the slot is elsewhere now (a failover, a resharding)
    AuthenticationError,
    NoPermissionError,
    OutOfMemoryError,
    ReadOnlyError,
    BusyLoadingError,
    ClusterDownError,
    MasterDownError,
    TryAgainError,
)
# Error codes (a reply's first word; "BUSYGROUP" is not "BUSY").
_TRANSIENT_CODES = frozenset({"BUSY", "MISCONF", "NOREPLICAS", "NOPERM", "OOM"})


def _source(name: str) -> str:
    return resources.files("otpservice.store").joinpath("lua", name).read_text(encoding="utf-8")


def reply_text(value: bytes | str | int) -> str:
    """One value of a Redis reply as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


@contextlib.contextmanager
def store_errors() -> Iterator[None]:
    """Turn Redis being down, slow or refusing writes into ``StoreUnavailable``."""
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError, TimeoutError) as exc:
        raise StoreUnavailable("the store cannot be reached; retry shortly") from exc
    except _TRANSIENT_ERRORS as exc:
        raise StoreUnavailable("the store cannot take the request now; retry shortly") from exc
    except ResponseError as exc:
        if str(exc).split(" ", 1)[0] in _TRANSIENT_CODES:
            raise StoreUnavailable("the store cannot take the request now; retry shortly") from exc
        raise
    except (RedisError, RedisClusterException) as exc:
        # Cluster errors (no node reachable, slot not covered, ...) and the like.
        raise StoreUnavailable("the store cannot serve now; retry shortly") from exc


class StoreCommands:
    """The store client, and the one way commands reach it.

    Each command gets the configured deadline (``redis.socket_timeout_seconds``) and one of
    ``redis.max_connections`` slots; a command past its deadline is ``StoreUnavailable``, like
    Redis being down, and is never retried (it may have run).
    """

    def __init__(self, client: StoreClient, settings: RedisSettings) -> None:
        self.client = client
        self.embedded = settings.url is None and settings.sentinel is None
        # The embedded store has no replicas to wait for.
        self._replicas = 0 if self.embedded else settings.min_replicas_acked
        self._wait_ms = settings.wait_timeout_ms
        # ids of the scripts whose loss in a failover would break a promise (Scripts.register).
        self.durable: set[int] = set()
        self._timeout_s = settings.socket_timeout_seconds
        # Waiting for a slot counts against the deadline, so a burst waits instead of failing.
        self._slots = asyncio.Semaphore(settings.max_connections)
        self.scripts = Scripts(self)
        # Scripts skip redis-py's command layers (script_connections.py), on one Redis and per
        # primary on a cluster; the embedded store is no socket.
        self._direct: ScriptConnections | ClusterScriptConnections | None = None
        if isinstance(client, RedisCluster):
            self._direct = ClusterScriptConnections(client)
        elif not self.embedded:
            self._direct = ScriptConnections(client.connection_pool.make_connection)

    @contextlib.asynccontextmanager
    async def command(self) -> AsyncIterator[StoreClient]:
        """Run the commands of the ``async with`` block under one deadline and one slot."""
        with store_errors():
            async with asyncio.timeout(self._timeout_s), self._slots:
                yield self.client

    async def pipeline(self, key: str, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Run ``commands`` in one round trip on the node of ``key`` (every command's keys on
        that node: on a cluster, in slots of the same primary), under one deadline; their
        replies, an error reply as its exception (a value, not raised). Redis being down is
        ``StoreUnavailable``."""
        with store_errors():
            async with asyncio.timeout(self._timeout_s), self._slots:
                if isinstance(self._direct, ClusterScriptConnections):
                    return await self._direct.pipeline(key, commands)
                if self._direct is not None:
                    return await self._direct.pipeline(commands)
                pipe: Any = self.client.pipeline(transaction=False)
                for command in commands:
                    pipe.execute_command(*command)
                replies: list[Any] = await pipe.execute(raise_on_error=False)
                return replies

    def node_of(self, key: str) -> str:
        """The master serving ``key``: one name for every key on one Redis."""
        if isinstance(self._direct, ClusterScriptConnections):
            return self._direct.node_of(key)
        return ""

    async def erase(
        self, op: Literal["del", "xdel", "zrem"], keys: Sequence[str], members: Sequence[Any] = ()
    ) -> int:
        """Delete personal data durably (``erase.lua``): ``keys`` of one slot ("del"), or
        ``members`` of ``keys[0]``, a stream's entries ("xdel") or a sorted set's ("zrem");
        how many went."""
        reply = await self.run_script(self.scripts.erase, keys, [op, *members])
        return int(reply[0])

    async def delete_stream_entries(
        self, key: str, matches: Callable[[dict[Any, Any]], bool], batch: int = 500
    ) -> int:
        """Delete the entries of stream ``key`` whose fields ``matches``, a batch at a time (each
        batch its own deadline); how many went."""
        erased, start = 0, "-"
        while True:
            async with self.command() as redis:
                entries: list[Any] = await redis.xrange(key, start, "+", count=batch) or []
            doomed = [entry_id for entry_id, fields in entries if matches(fields)]
            if doomed:
                erased += await self.erase("xdel", [key], doomed)
            if len(entries) < batch:
                return erased
            start = f"({reply_text(entries[-1][0])}"

    async def run_script(
        self, script: AsyncScript, keys: Sequence[str], args: Sequence[Any]
    ) -> list[Any]:
        """Run ``script`` and return its reply as a list, Redis failures as ``StoreUnavailable``.

        Written out rather than through ``command()``: this is every request's hot path.
        """
        with store_errors():
            async with asyncio.timeout(self._timeout_s), self._slots:
                if self._replicas and id(script) in self.durable:
                    reply = await self._run_durably(script, keys, args)
                elif self._direct is None:
                    reply = await script(keys=keys, args=args)
                else:
                    reply = await self._direct.evalsha(script, keys, args)
        return reply if isinstance(reply, list) else [reply]

    async def _run_durably(
        self, script: AsyncScript, keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        """The script, then WAIT for ``redis.min_replicas_acked`` replicas on its connection.

        Raises:
            StoreUnavailable: fewer replicas acknowledged it in ``redis.wait_timeout_ms``. The
                write may stand (on the primary) or be lost in a failover: callers treat the
                request as not answered.
        """
        assert self._direct is not None  # the embedded store waits for no replica
        reply, acked = await self._direct.evalsha_and_wait(
            script, keys, args, replicas=self._replicas, timeout_ms=self._wait_ms
        )
        if acked < self._replicas:
            raise StoreUnavailable(
                f"the write reached {acked} of {self._replicas} replicas in time; retry shortly"
            )
        return reply

    async def close(self) -> None:
        """Close the connections the scripts keep (the client's own pool stays its owner's)."""
        if self._direct is not None:
            await self._direct.close()


class Scripts:
    """Every Lua script, registered on one client."""

    def __init__(self, commands: StoreCommands) -> None:
        self._commands = commands
        client, embedded = commands.client, commands.embedded
        prelude = _source("_prelude.lua")
        totp_prelude = f"{prelude}\n{_source('_totp.lua')}"
        # Every registered script, for preload(): filled by register() so none is left out.
        self._all: list[AsyncScript] = []

        def register(
            name: str,
            *,
            shared: bool = True,
            writes: bool = True,
            durable: bool = False,
            totp: bool = False,
        ) -> AsyncScript:
            # A shebang makes Redis check its flags before the script runs: a writing script is
            # refused whole when memory is full, instead of failing half-way (or, without a
            # shebang, passing Redis's lazy out-of-memory check and writing anyway).
            # The embedded store (fakeredis) cannot parse shebangs, and has no memory limit.
            shebang = "" if embedded else "#!lua" if writes else "#!lua flags=no-writes"
            body = _source(f"{name}.lua")
            front = totp_prelude if totp else prelude if shared else ""
            script = client.register_script(f"{shebang}\n{front}\n{body}")
            self._all.append(script)
            if durable:
                commands.durable.add(id(script))
            return script

        # durable: followed by WAIT when redis.min_replicas_acked is set (docs/operations.md).
        self.issue_challenge = register("issue_challenge", durable=True)
        self.spend_attempt = register("spend_attempt", durable=True)
        self.record_verdict = register("record_verdict", durable=True)
        self.cancel_challenge = register("cancel_challenge", durable=True)
        self.confirm_challenge = register("confirm_challenge", shared=False, durable=True)
        self.read_challenge = register("read_challenge", writes=False)
        self.record_delivery = register("record_delivery", durable=True)
        self.check_ready = register("check_ready", shared=False)
        self.idempotency = register("idempotency", shared=False, durable=True)
        self.erase = register("erase", shared=False, durable=True)
        self.queue_add = register("queue_add", shared=False, durable=True)
        self.queue_finish = register("queue_finish", shared=False)
        self.queue_retry = register("queue_retry", shared=False)
        self.queue_release = register("queue_release", shared=False)
        self.queue_touch = register("queue_touch", shared=False)
        self.take_send_slot = register("take_send_slot", shared=False)
        self.opt_out = register("opt_out", shared=False, durable=True)
        self.optout_index = register("optout_index", shared=False, durable=True)
        self.inbound_claim = register("inbound_claim", shared=False)
        self.take_quota = register("take_quota")
        self.fraud_counts = register("fraud_counts", shared=False)
        self.fraud_trip = register("fraud_trip", shared=False)
        self.add_counts = register("add_counts", shared=False)
        # Authenticator-app factors: _prelude.lua and _totp.lua in front of each.
        self.totp_enrol = register("totp_enrol", totp=True, durable=True)
        self.totp_reserve = register("totp_reserve", totp=True, durable=True)
        self.totp_verdict = register("totp_verdict", totp=True, durable=True)
        self.totp_activate_reserve = register("totp_activate_reserve", totp=True, durable=True)
        self.totp_activate = register("totp_activate", totp=True, durable=True)
        self.totp_recovery_reserve = register("totp_recovery_reserve", totp=True, durable=True)
        self.totp_recovery = register("totp_recovery", totp=True, durable=True)
        self.totp_recovery_codes = register("totp_recovery_codes", totp=True, durable=True)
        self.totp_remove = register("totp_remove", totp=True, durable=True)

    async def preload(self) -> None:
        """Load every script on every primary, connecting the client on the way.

        Running this once before serving also matters for Redis Cluster: redis-py's async cluster
        client can fail (AttributeError inside a connection) when its very first commands arrive
        concurrently; a client that has already reached every node does not.
        """
        for script in self._all:
            async with self._commands.command() as client:
                await client.script_load(script.script)
