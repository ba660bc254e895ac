"""EventFeed: every event for the app, in a Redis Stream apps may read themselves.

Entries have the fields ``id`` (the webhook-id), ``type``, ``timestamp`` (RFC 3339) and
``data`` (a JSON object), the same as the POSTed events. An app reads them with ``XREAD`` (or
its own consumer group). They hold personal data (reply bodies, numbers), so every append trims
what is older than ``privacy.retention_days``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from otpservice.store.keys import KeySpace
    from otpservice.store.scripts import StoreCommands


class EventFeed:
    """Appends to the event stream, trims it, and erases entries on request."""

    def __init__(self, commands: StoreCommands, keys: KeySpace, retention_ms: int) -> None:
        self._commands = commands
        self._key = keys.event_feed()
        self._retention_ms = retention_ms

    async def append(self, fields: dict[str, str], now_ms: int) -> None:
        """Add an entry; entries older than the retention go (they are at the head: cheap)."""
        entry: dict[Any, Any] = fields
        async with self._commands.command() as redis:
            await redis.xadd(self._key, entry, minid=now_ms - self._retention_ms, approximate=False)

    async def trim(self, now_ms: int) -> int:
        """Drop the entries older than the retention (also when nothing is being added, or
        the stream was turned off); how many went."""
        async with self._commands.command() as redis:
            return int(
                await redis.xtrim(self._key, minid=now_ms - self._retention_ms, approximate=False)
            )

    async def erase(self, matches: Callable[[dict[str, Any]], bool]) -> int:
        """Delete every entry whose ``data`` ``matches``; how many went."""

        def entry_matches(fields: dict[Any, Any]) -> bool:
            try:
                data = json.loads(fields.get(b"data") or fields.get("data") or "{}")
            except ValueError:
                return False
            return isinstance(data, dict) and matches(data)

        return await self._commands.delete_stream_entries(self._key, entry_matches)
