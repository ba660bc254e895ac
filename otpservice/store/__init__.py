"""All Redis access: key names, Lua scripts, and the stores built on them."""

from __future__ import annotations

from otpservice.store.challenges import ChallengeStore
from otpservice.store.client import StoreClient, connect
from otpservice.store.idempotency import IdempotencyStore
from otpservice.store.keys import ChallengeKeys, KeySpace
from otpservice.store.scripts import StoreCommands

__all__ = [
    "ChallengeKeys",
    "ChallengeStore",
    "IdempotencyStore",
    "KeySpace",
    "StoreClient",
    "StoreCommands",
    "connect",
]
