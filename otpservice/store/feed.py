"""EventFeed: every event for the app, in a Redis Stream apps may read themselves.

Entries have the fields ``id`` (the webhook-id), ``type``, ``timestamp`` (RFC 3339) and
``data`` (a JSON object), the same as the POSTed events. An app reads them with ``XREAD`` (or
its own consumer group). They hold personal data (reply bodies, numbers), so every append trims
what is older than ``privacy.retention_days``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from otpservice.store.scripts import reply_text

if TYPE_CHECKING:
    from collections.abc import Callable

    from otpservice.store.keys import KeySpace
    from otpservice.store.scripts import StoreCommands

_BATCH = 500


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
        erased, start = 0, "-"
        while True:
            async with self._commands.command() as redis:
                entries: list[Any] = await redis.xrange(self._key, start, "+", count=_BATCH) or []
            doomed: list[Any] = []
            for entry_id, fields in entries:
                raw = fields.get(b"data") or fields.get("data") or "{}"
                try:
                    data = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(data, dict) and matches(data):
                    doomed.append(entry_id)
            if doomed:
                async with self._commands.command() as redis:
                    erased += int(await redis.xdel(self._key, *doomed))
            if len(entries) < _BATCH:
                return erased
            start = f"({reply_text(entries[-1][0])}"
