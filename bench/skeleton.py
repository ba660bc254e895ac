"""The reference the service is measured against: a plain Litestar + redis-py ``/verify``.

The guide's targets come from "a throw-away Litestar + redis-py skeleton"; this is one, run by
``run.py`` in the same run as the service, so the two are compared under the same machine load
(argon2's speed on this VM drifts by 10 % from one run to the next). It does what a minimal
``/verify`` must: one script that counts an attempt and reads the stored digest, one keyed
argon2id hash on a thread pool (one thread per core), a constant-time comparison, one script
that records the verdict. No authentication, throttling, metrics, logs or error mapping.

Run by ``run.py`` as ``uvicorn skeleton:app`` with ``SKELETON_REDIS_URL`` and
``SKELETON_ARGON2`` (``memory_kib,time_cost,parallelism``) in its environment. With
``SKELETON_REDIS=0`` it leaves Redis out (the "floor" of ``run.py --floor``): only HTTP and the
hash, the least any ``/verify`` on this stack can do.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import os
from concurrent.futures import ThreadPoolExecutor

import msgspec
import redis.asyncio as redis
from argon2.low_level import Type, hash_secret_raw
from litestar import Litestar, post

MEMORY_KIB, TIME_COST, PARALLELISM = (
    int(p) for p in os.environ.get("SKELETON_ARGON2", "19456,2,1").split(",")
)
USE_REDIS = os.environ.get("SKELETON_REDIS", "1") == "1"
PEPPER = os.urandom(32)
SALT = os.urandom(16)

store = redis.Redis.from_url(os.environ.get("SKELETON_REDIS_URL", "redis://127.0.0.1:6379/0"))
# KEYS[1] the challenge hash. Counts an attempt; returns the stored digest (none here).
reserve = store.register_script(
    "redis.call('HINCRBY', KEYS[1], 'a', 1) return redis.call('HGET', KEYS[1], 'h')"
)
# KEYS[1] the challenge hash; ARGV[1] the verdict.
settle = store.register_script("redis.call('HSET', KEYS[1], 'v', ARGV[1]) return 1")
hashing = ThreadPoolExecutor(max_workers=os.cpu_count() or 1)


class VerifyRequest(msgspec.Struct, forbid_unknown_fields=True):
    """What the login app sends."""

    challenge_id: str
    code: str


class Verdict(msgspec.Struct):
    """The answer."""

    challenge_id: str
    status: str


@post("/verify", status_code=200)
async def verify(data: VerifyRequest) -> Verdict:
    """Count the attempt, hash the keyed code, compare, record the verdict."""
    key = f"skeleton:{{{data.challenge_id.partition('.')[0]}}}:c"
    stored = await reserve(keys=[key]) if USE_REDIS else None
    keyed = hmac.new(PEPPER, f"{data.challenge_id}:{data.code}".encode(), hashlib.sha256).digest()
    digest = await asyncio.get_running_loop().run_in_executor(
        hashing,
        functools.partial(
            hash_secret_raw,
            keyed,
            SALT,
            time_cost=TIME_COST,
            memory_cost=MEMORY_KIB,
            parallelism=PARALLELISM,
            hash_len=32,
            type=Type.ID,
        ),
    )
    matched = hmac.compare_digest(digest, stored or digest)
    if USE_REDIS:
        await settle(keys=[key], args=["1" if matched else "0"])
    return Verdict(challenge_id=data.challenge_id, status="approved")


app = Litestar([verify], logging_config=None)
