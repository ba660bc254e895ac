"""InboundStore: what the service remembers of replies, all in the replying number's slot."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any, Literal

from otpservice.store.scripts import reply_text

if TYPE_CHECKING:
    from otpservice.store.keys import KeySpace
    from otpservice.store.scripts import StoreCommands

# Providers repeat a webhook for up to a day (Event Grid: 24 h). A handled reply's mark is
# kept as long as the reply itself (``privacy.retention_days``), so a replay is caught for that
# long too; a keyword's, for as long as the opt-out it changed (``OptOutStore``).
InboundClaim = Literal["new", "retry", "taken"]

# How long a reply stays claimed by a handler that may have died (a repeat then acts on it).
CLAIM_SECONDS = 120


class InboundStore:
    """Remembers handled replies (so a repeat changes nothing) and the keyword answers sent."""

    def __init__(self, commands: StoreCommands, keys: KeySpace, *, seen_seconds: int) -> None:
        self._commands = commands
        self._keys = keys
        self._seen_seconds = seen_seconds

    async def claim(self, e164: str, message_id: str) -> tuple[InboundClaim, str]:
        """Take the reply ``message_id`` from ``e164`` in hand: "new", "retry" (a handler failed
        half-way on it before), or "taken" when it is being handled or was handled already (a
        provider's repeat, perhaps arriving at the same time); and the claim's token, which
        ``handled`` and ``release`` need."""
        token = secrets.token_urlsafe(12)
        reply = await self._run(e164, message_id, "claim", token, CLAIM_SECONDS)
        claim = reply_text(reply[0])
        if claim == "new":
            return "new", token
        return ("retry" if claim == "retry" else "taken"), token

    async def release(self, e164: str, message_id: str, token: str) -> None:
        """Handling failed half-way: let the provider's repeat finish it (every step is safe
        to repeat), as a retry, not as a new reply; unless the claim is no longer ours."""
        await self._run(e164, message_id, "release", token, self._seen_seconds)

    async def handled(self, e164: str, message_id: str, token: str) -> None:
        """The reply was handled: ignore repeats for the retention time."""
        await self._run(e164, message_id, "handled", token, self._seen_seconds)

    async def _run(
        self, e164: str, message_id: str, op: str, token: str, seconds: int
    ) -> list[Any]:
        return await self._commands.run_script(
            self._commands.scripts.inbound_claim,
            [self._keys.inbound_seen(e164, message_id)],
            [op, token, seconds],
        )

    async def claim_reply(self, e164: str, keyword: str, window_seconds: int) -> bool:
        """True for the first answer to ``keyword`` from ``e164`` within the window."""
        async with self._commands.command() as redis:
            return bool(
                await redis.set(
                    self._keys.reply_guard(e164, keyword), 1, nx=True, ex=window_seconds
                )
            )
