"""AuditLog: security-relevant happenings in a Redis Stream, for the security team.

Entries (fields ``kind``, ``actor``, ``data`` as JSON) for lockouts, fraud-guard trips and
clears, and every operator change (opt-outs added or removed, data erased, a destination
cleared). Numbers appear masked. Capped at ``MAX_ENTRIES`` and trimmed like the event stream
after ``privacy.retention_days``.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from otpservice.store.keys import KeySpace
    from otpservice.store.scripts import StoreCommands

MAX_ENTRIES = 100_000


class AuditLog:
    """Appends to the audit stream ``<prefix>:{audit}:stream``."""

    def __init__(self, commands: StoreCommands, keys: KeySpace, retention_ms: int) -> None:
        self._commands = commands
        self._key = keys.audit()
        self._retention_ms = retention_ms

    async def record(self, kind: str, *, actor: str, data: dict[str, Any]) -> None:
        """Append one entry; ``actor`` is the API client, or "service" for its own doings."""
        fields: dict[Any, Any] = {"kind": kind, "actor": actor, "data": json.dumps(data)}
        now_ms = int(time.time() * 1000)
        async with self._commands.command() as redis:
            await redis.xadd(self._key, fields, maxlen=MAX_ENTRIES, approximate=True)
            await redis.xtrim(self._key, minid=now_ms - self._retention_ms, approximate=True)
