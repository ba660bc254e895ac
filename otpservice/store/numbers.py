"""NumberRecords: every key held about one number, found by its hash tag (one slot)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from redis.asyncio.cluster import RedisCluster

from otpservice.store.scripts import reply_text

if TYPE_CHECKING:
    from otpservice.store.keys import KeySpace
    from otpservice.store.scripts import StoreCommands


class NumberRecords:
    """Erases what is held about a number: challenges, counters, reply marks."""

    def __init__(self, commands: StoreCommands, keys: KeySpace) -> None:
        self._commands = commands
        self._keys = keys

    async def erase_all_but_opt_out(self, e164: str) -> int:
        """Delete every key of the number except its opt-out (and its history) and the
        short-lived marks that keep a provider's repeat from acting again (digests only, gone
        within a day); how many went."""
        kept = self._keys.kept_on_erasure(e164)
        doomed = [key for key in await self._scan(e164) if not key.startswith(kept)]
        if not doomed:
            return 0
        return await self._commands.erase("del", doomed)

    async def _scan(self, e164: str) -> list[str]:
        pattern = self._keys.number_pattern(e164)
        client = self._commands.client
        # On a cluster only the node that holds the number's slot has its keys.
        target: dict[str, Any] = (
            {"target_nodes": client.get_node_from_key(self._keys.optout(e164))}
            if isinstance(client, RedisCluster)
            else {}
        )
        found: list[str] = []
        cursor: int = 0
        while True:
            async with self._commands.command() as redis:
                reply: Any = await redis.scan(cursor, match=pattern, count=1000, **target)
            cursor, batch = _scan_reply(reply)
            found.extend(reply_text(key) for key in batch)
            if cursor == 0:
                return found


def _scan_reply(reply: Any) -> tuple[int, list[bytes | str]]:
    # A single node answers (cursor, keys); a cluster client ({node name: cursor}, keys).
    cursor, keys = reply
    if isinstance(cursor, dict):
        [cursor] = cursor.values()
    return int(cursor), list(keys)
