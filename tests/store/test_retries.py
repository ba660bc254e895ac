"""Each script may be sent twice (a retry after a lost reply) and must count once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis

from otpservice.config.schema import Settings
from otpservice.crypto.codes import CodeHasher, Pepper
from otpservice.errors import IncorrectCode, NumberLocked
from otpservice.models import CodeHash
from otpservice.store import ChallengeKeys, ChallengeStore, KeySpace, StoreCommands
from otpservice.store import challenges as challenges_module
from tests.support.app import INDEX_KEY, PEPPER
from tests.support.servers.redis import RedisServer

NUMBER = "+14155550123"


@pytest.fixture
async def store(
    redis: Redis, redis_server: RedisServer, make_settings: Callable[..., Settings]
) -> AsyncIterator[tuple[ChallengeStore, KeySpace, CodeHash]]:
    settings = make_settings(
        redis_server.url,
        send_limits={"min_interval_seconds": 30},
        lockout={"max_failures": 2, "base_seconds": 60},
    )
    commands = StoreCommands(redis, settings.redis)
    challenge_store = ChallengeStore(commands, KeySpace("otp", INDEX_KEY), settings)
    hasher = CodeHasher(settings.hashing, Pepper(PEPPER))
    code_hash = await hasher.hash_code("x.y", "123456")
    hasher.close()
    yield challenge_store, KeySpace("otp", INDEX_KEY), code_hash
    await commands.close()


async def _issue(challenge_store: ChallengeStore, keys: ChallengeKeys, code_hash: CodeHash) -> int:
    issued = await challenge_store.issue(
        keys, code_hash=code_hash, client="c", masked_phone="+1***23", purpose="login"
    )
    return issued.created_at_ms


async def test_issue_sent_twice_counts_one_send(
    store: tuple[ChallengeStore, KeySpace, CodeHash],
) -> None:
    challenge_store, keyspace, code_hash = store
    keys = keyspace.new_challenge(NUMBER)
    first = await _issue(challenge_store, keys, code_hash)
    # The same request again (same challenge id): same answer, not a min-interval refusal.
    assert await _issue(challenge_store, keys, code_hash) == first


async def test_spend_and_verdict_sent_twice_count_once(
    store: tuple[ChallengeStore, KeySpace, CodeHash], monkeypatch: pytest.MonkeyPatch
) -> None:
    challenge_store, keyspace, code_hash = store
    keys = keyspace.new_challenge(NUMBER)
    await _issue(challenge_store, keys, code_hash)
    monkeypatch.setattr(challenges_module.secrets, "token_urlsafe", lambda _: "same-reservation")
    reservation = await challenge_store.spend_attempt(keys, "c")
    assert await challenge_store.spend_attempt(keys, "c") == reservation
    assert (await challenge_store.read(keys, "c")).attempts_left == 4
    approved = await challenge_store.record_verdict(keys, "c", reservation, matched=True)
    # The retried verdict answers "approved" again, not "already used".
    again = await challenge_store.record_verdict(keys, "c", reservation, matched=True)
    assert again == approved


async def test_a_wrong_verdict_sent_twice_counts_one_failure(
    store: tuple[ChallengeStore, KeySpace, CodeHash],
) -> None:
    challenge_store, keyspace, code_hash = store
    keys = keyspace.new_challenge(NUMBER)
    await _issue(challenge_store, keys, code_hash)
    reservation = await challenge_store.spend_attempt(keys, "c")
    for _ in range(2):
        with pytest.raises(IncorrectCode):
            await challenge_store.record_verdict(keys, "c", reservation, matched=False)
    # max_failures is 2: one more failure locks, so only one was counted.
    reservation = await challenge_store.spend_attempt(keys, "c")
    with pytest.raises(NumberLocked):
        await challenge_store.record_verdict(keys, "c", reservation, matched=False)


async def test_a_verdict_that_never_comes_counts_as_a_failure(
    store: tuple[ChallengeStore, KeySpace, CodeHash], monkeypatch: pytest.MonkeyPatch
) -> None:
    challenge_store, keyspace, code_hash = store
    monkeypatch.setattr(challenges_module, "RESERVATION_LIFETIME_MS", 200)
    keys = keyspace.new_challenge(NUMBER)
    await _issue(challenge_store, keys, code_hash)
    # Two reservations fill the limit of 2; their verdicts are lost (a crash, say).
    await challenge_store.spend_attempt(keys, "c")
    await challenge_store.spend_attempt(keys, "c")
    with pytest.raises(NumberLocked) as waiting:
        await challenge_store.spend_attempt(keys, "c")
    assert waiting.value.retry_after_seconds == 1
    await asyncio.sleep(0.25)
    # Once stale, they count as two failures: the number is locked for the first lock time.
    with pytest.raises(NumberLocked) as locked:
        await challenge_store.spend_attempt(keys, "c")
    assert locked.value.retry_after_seconds == 60
