"""FraudGuardStore: codes sent and verified per destination, and whether it is tripped.

A destination is a calling code ("+44") or a number prefix ("+4474"). A country and its
prefixes share one hash (one slot), so counting or checking a number's two destinations is
one call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from otpservice.models import Model

if TYPE_CHECKING:
    from otpservice.config.schema import FraudGuardSettings
    from otpservice.store.keys import KeySpace
    from otpservice.store.scripts import StoreCommands


class FraudVerdict(Model, frozen=True):
    """A destination's conversion over the window, and whether the guard is tripped."""

    destination: str
    tripped: bool
    change: int  # 1: tripped by this check; -1: cleared by it; 0: as it was
    sent: int
    verified: int
    retry_after_seconds: int


class FraudGuardStore:
    """Counts and checks destinations, all of one country in one call."""

    def __init__(self, commands: StoreCommands, keys: KeySpace) -> None:
        self._commands = commands
        self._keys = keys

    async def add(
        self,
        country: str,
        destinations: list[str],
        settings: FraudGuardSettings,
        *,
        sent: int,
        verified: int,
    ) -> None:
        """Count codes sent to and verified by each destination of ``country``."""
        await self._run(country, "add", destinations, settings, sent, verified)

    async def check(
        self, country: str, destinations: list[str], settings: FraudGuardSettings
    ) -> list[FraudVerdict]:
        """Each destination's verdict now (a change of state is recorded and reported once)."""
        reply = await self._run(country, "check", destinations, settings)
        return [
            FraudVerdict(
                destination=d,
                tripped=bool(int(r[0])),
                change=int(r[1]),
                sent=int(r[2]),
                verified=int(r[3]),
                retry_after_seconds=int(r[4]),
            )
            for d, r in zip(destinations, reply, strict=True)
        ]

    async def clear(self, country: str, destination: str, settings: FraudGuardSettings) -> bool:
        """Forget a destination's counts (an operator cleared it); whether it was tripped."""
        reply = await self._run(country, "clear", [destination], settings)
        return bool(int(reply[0]))

    async def _run(
        self,
        country: str,
        op: str,
        destinations: list[str],
        settings: FraudGuardSettings,
        sent: int = 0,
        verified: int = 0,
    ) -> list[Any]:
        return await self._commands.run_script(
            self._commands.scripts.fraud_guard,
            [self._keys.fraud_guard(country)],
            [
                op,
                settings.window_seconds,
                repr(settings.floor),
                settings.min_sent,
                sent,
                verified,
                *destinations,
            ],
        )
