"""Operator routes for the fraud guard (the ``admin`` scope): read and clear a destination."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from litestar import Request, delete, get
from litestar.params import FromPath

from otpservice.config.schema import NUMBER_PREFIX_PATTERN
from otpservice.errors import InvalidInput
from otpservice.models import FraudScope
from otpservice.web.context import audit, services
from otpservice.web.openapi import documented

if TYPE_CHECKING:
    from otpservice.usecases.abuse import AbusePolicy

_DESTINATION = re.compile(NUMBER_PREFIX_PATTERN)


class FraudGuardState(msgspec.Struct, frozen=True, kw_only=True):
    """A destination's conversion over the fraud guard's window."""

    destination: Annotated[str, msgspec.Meta(description='a calling code ("+44") or prefix')]
    tripped: bool
    sent: int
    verified: int
    scope: Annotated[
        FraudScope | None,
        msgspec.Meta(
            description="whom a trip refuses: everyone, or only the sources (an API client and "
            "an end-user /24 or /64) that made it trip; null when not tripped"
        ),
    ] = None
    refused_sources: Annotated[
        int, msgspec.Meta(description='how many sources it refuses, for the scope "sources"')
    ] = 0
    baseline_sent: Annotated[
        int, msgspec.Meta(description="codes sent over the last seven whole days")
    ] = 0
    baseline_verified: Annotated[
        int, msgspec.Meta(description="codes verified over the last seven whole days")
    ] = 0


class FraudGuardCleared(msgspec.Struct, frozen=True, kw_only=True):
    """What clearing a destination did."""

    destination: str
    was_tripped: bool


def _policy(request: Request[Any, Any, Any], destination: str) -> AbusePolicy:
    if not _DESTINATION.fullmatch(destination):
        raise InvalidInput(
            'destination must be a calling code or number prefix such as "+44" or "+4470"',
            code="invalid_destination",
        )
    policy = services(request).abuse
    return policy


@get(
    "/fraud-guard/{destination:str}",
    summary="Read the fraud guard of a destination",
    **documented("admin", "invalid_destination", "store_unavailable"),
)
async def read_fraud_guard(
    destination: FromPath[str], request: Request[Any, Any, Any]
) -> FraudGuardState:
    """Codes sent to and verified by a calling code or prefix, and whether it is paused."""
    verdict = await _policy(request, destination).fraud_state(destination)
    return FraudGuardState(
        destination=destination,
        tripped=verdict.tripped,
        sent=verdict.sent,
        verified=verdict.verified,
        scope=verdict.scope,
        refused_sources=verdict.refused_sources,
        baseline_sent=verdict.baseline_sent,
        baseline_verified=verdict.baseline_verified,
    )


@delete(
    "/fraud-guard/{destination:str}",
    status_code=200,
    summary="Clear a destination",
    **documented("admin", "invalid_destination", "store_unavailable"),
)
async def clear_fraud_guard(
    destination: FromPath[str], request: Request[Any, Any, Any]
) -> FraudGuardCleared:
    """Resume codes to a destination the fraud guard paused; its counts start again."""
    was_tripped = await _policy(request, destination).clear_fraud(destination)
    await audit(request, "admin.fraud_clear", destination=destination, was_tripped=was_tripped)
    return FraudGuardCleared(destination=destination, was_tripped=was_tripped)


FRAUD_ROUTES = [read_fraud_guard, clear_fraud_guard]
