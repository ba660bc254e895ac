"""Security properties of issuing and verifying, each against a real Redis."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Any

import httpx
import msgspec
import pytest
from redis.asyncio import Redis

from otpservice.app import create_app
from otpservice.config.schema import Settings
from otpservice.crypto.codes import CodeHasher, Pepper
from otpservice.errors import QueueWriteInDoubt
from otpservice.models import ChallengeRequest
from tests.support.app import INDEX_KEY, PEPPER, ApiFactory, Phone, running
from tests.support.helpers import (
    PHONE,
    api_tokens,
    assert_problem,
    issue,
    issue_code,
    stored_bytes,
    wrong,
)
from tests.support.servers.redis import RedisServer


@pytest.fixture
async def counted(
    redis: Redis, redis_server: RedisServer, make_settings: Callable[..., Settings], phone: Phone
) -> AsyncIterator[Callable[..., Any]]:
    """Apps whose hasher is visible, so tests can count argon2 evaluations."""
    async with AsyncExitStack() as stack:

        async def start(**overrides: Any) -> tuple[httpx.AsyncClient, CodeHasher]:
            settings = make_settings(redis_server.url, **overrides)
            hasher = CodeHasher(settings.hashing, Pepper(PEPPER))
            app = phone.watch(create_app(settings, redis=redis, sms=phone.sender, hasher=hasher))
            return await stack.enter_async_context(running(app)), hasher

        yield start


async def verify(api: httpx.AsyncClient, challenge_id: str, code: str) -> httpx.Response:
    return await api.post("/verify", json={"challenge_id": challenge_id, "code": code})


async def test_concurrent_right_codes_approve_exactly_once(
    make_api: ApiFactory, phone: Phone
) -> None:
    api = await make_api(code={"max_attempts": 10})
    challenge_id, code = await issue_code(api, phone)
    responses = await asyncio.gather(*(verify(api, challenge_id, code) for _ in range(30)))
    statuses = Counter(r.status_code for r in responses)
    assert statuses[200] == 1, statuses
    # The others: used, budget spent, or, while ten reservations (the lockout threshold) await
    # their verdicts, told the number is locked for a second (they could all be failures).
    assert {r.json()["code"] for r in responses if r.status_code != 200} <= {
        "challenge_used",
        "too_many_attempts",
        "number_locked",
    }


async def test_concurrent_wrong_guesses_cost_exactly_the_budget(
    counted: Callable[..., Any], phone: Phone
) -> None:
    api, hasher = await counted()
    challenge_id, code = await issue_code(api, phone)
    before = hasher.evaluations
    responses = await asyncio.gather(*(verify(api, challenge_id, wrong(code)) for _ in range(200)))
    codes = Counter(r.json()["code"] for r in responses)
    # Five attempts were reserved and checked; every other guess was refused before hashing.
    assert hasher.evaluations - before == 5
    assert codes["incorrect_code"] + codes["too_many_attempts"] == 200, codes
    # Each checked guess reports what is left when it is settled, so at most four say "incorrect".
    assert codes["incorrect_code"] <= 4
    # The budget is spent: the right code is refused now.
    assert_problem(await verify(api, challenge_id, code), 429, "too_many_attempts")


async def test_asking_for_new_codes_does_not_reset_the_failure_counter(
    make_api: ApiFactory, phone: Phone
) -> None:
    api = await make_api(
        send_limits={"min_interval_seconds": 0, "per_hour": 100, "per_day": 100},
        lockout={"max_failures": 10, "base_seconds": 60, "max_seconds": 3600},
    )
    failures = 0
    # Four attempts a challenge, then a fresh code: the AuthQuake pattern.
    while failures < 9:
        challenge_id, code = await issue_code(api, phone)
        for _ in range(min(4, 9 - failures)):
            assert_problem(await verify(api, challenge_id, wrong(code)), 400, "incorrect_code")
            failures += 1
    challenge_id, code = await issue_code(api, phone)
    body = assert_problem(await verify(api, challenge_id, wrong(code)), 429, "number_locked")
    assert body["retry_after"] == 60
    # Locked: even the right code and a new challenge are refused, with a Retry-After.
    response = await verify(api, challenge_id, code)
    assert_problem(response, 429, "number_locked")
    assert 59 <= int(response.headers["retry-after"]) <= 60
    assert_problem(await api.post("/challenge", json={"phone": PHONE}), 429, "number_locked")
    # Other numbers are unaffected.
    await issue(api, "+14155550124")


async def test_repeated_lockouts_last_longer_up_to_the_maximum(
    make_api: ApiFactory, phone: Phone, redis: Redis
) -> None:
    api = await make_api(
        code={"max_attempts": 2},
        send_limits={"min_interval_seconds": 0, "per_hour": 100, "per_day": 100},
        lockout={"max_failures": 2, "base_seconds": 1, "max_seconds": 3},
    )
    lock_times = []
    for _ in range(4):
        challenge_id, code = await issue_code(api, phone)
        assert_problem(await verify(api, challenge_id, wrong(code)), 400, "incorrect_code")
        body = assert_problem(await verify(api, challenge_id, wrong(code)), 429, "number_locked")
        lock_times.append(body["retry_after"])
        await asyncio.sleep(body["retry_after"] + 0.05)
    assert lock_times == [1, 2, 3, 3]


async def test_a_success_resets_the_failure_counter(make_api: ApiFactory, phone: Phone) -> None:
    api = await make_api(
        send_limits={"min_interval_seconds": 0, "per_hour": 100, "per_day": 100},
        lockout={"max_failures": 3},
    )
    for _ in range(3):
        challenge_id, code = await issue_code(api, phone)
        assert_problem(await verify(api, challenge_id, wrong(code)), 400, "incorrect_code")
        assert_problem(await verify(api, challenge_id, wrong(code)), 400, "incorrect_code")
        # Without the success below, the third round's second failure would lock the number.
        assert (await verify(api, challenge_id, code)).status_code == 200


async def test_cancelling_does_not_reset_the_failure_counter_either(
    make_api: ApiFactory, phone: Phone
) -> None:
    api = await make_api(
        send_limits={"min_interval_seconds": 0, "per_hour": 100, "per_day": 100},
        lockout={"max_failures": 4, "base_seconds": 300},
    )
    for _ in range(3):  # a guess, then cancel and ask again: the failures stay counted
        challenge_id, code = await issue_code(api, phone)
        assert_problem(await verify(api, challenge_id, wrong(code)), 400, "incorrect_code")
        assert (await api.delete(f"/challenge/{challenge_id}")).status_code == 200
    challenge_id, code = await issue_code(api, phone)
    assert_problem(await verify(api, challenge_id, wrong(code)), 429, "number_locked")
    assert_problem(await api.post("/challenge", json={"phone": PHONE}), 429, "number_locked")


async def test_redis_never_holds_a_code_or_a_number_in_clear(
    api: httpx.AsyncClient, phone: Phone, redis: Redis
) -> None:
    response = await api.post(
        "/challenge", json={"phone": PHONE}, headers={"Idempotency-Key": "dump-check"}
    )
    challenge_id = response.json()["challenge_id"]
    code = await phone.code_for(challenge_id)
    await verify(api, challenge_id, wrong(code))
    dump = await stored_bytes(redis, "*")
    assert dump
    assert code.encode() not in dump
    assert PHONE.encode() not in dump
    assert PHONE[1:].encode() not in dump
    assert PEPPER.encode() not in dump
    assert INDEX_KEY.encode() not in dump
    # Nor a plain digest of the request, which a dictionary of numbers would reverse.
    plain = ChallengeRequest(phone=PHONE)
    assert hashlib.sha256(msgspec.json.encode(plain)).hexdigest().encode() not in dump


async def test_no_code_number_or_secret_crosses_the_wire_to_redis(
    api: httpx.AsyncClient, phone: Phone, redis_server: RedisServer
) -> None:
    # The red team watched MONITOR: every command the service sends, and every command its
    # scripts run, for a challenge, a wrong guess, a right one and /metrics. (Events for the
    # app carry the numbers they are about, by design: docs/security.md.)
    watcher = Redis.from_url(redis_server.url)
    seen: list[str] = []
    async with watcher.monitor() as monitor:

        async def watch() -> None:
            async for command in monitor.listen():
                seen.append(str(command.get("command", "")))

        watching = asyncio.create_task(watch())
        await asyncio.sleep(0.1)
        challenge_id, code = await issue_code(api, phone)
        await verify(api, challenge_id, wrong(code))
        assert (await verify(api, challenge_id, code)).status_code == 200
        metrics = (await api.get("/metrics")).text
        await asyncio.sleep(0.3)
        watching.cancel()
    await watcher.aclose()
    wire = "\n".join(seen)
    assert "EVALSHA" in wire.upper()
    # The code as a value of its own (six digits also occur inside timestamps).
    assert not re.search(rf"(?<![0-9]){code}(?![0-9])", wire + metrics)
    for secret in (PHONE[1:], PEPPER, INDEX_KEY):
        assert secret not in wire
        assert secret not in metrics


async def test_every_key_of_a_number_shares_one_hash_tag(
    api: httpx.AsyncClient, redis: Redis
) -> None:
    challenge_id = (await issue(api))["challenge_id"]
    tag = challenge_id.split(".")[0]
    keys = [k.decode() async for k in redis.scan_iter()]
    number_keys = [k for k in keys if "{" + tag + "}" in k]
    assert {k.rsplit(":", 1)[-1] for k in number_keys} >= {"active", "sends"}
    assert any(":c:" in k for k in number_keys)
    assert all(k.startswith("otp:") for k in keys)
    ttl = await redis.pttl(next(k for k in number_keys if ":c:" in k))
    # The challenge hash lives for its TTL plus the tombstone (300 + 600 s), then vanishes.
    assert 899_000 < ttl <= 900_000


async def test_another_clients_challenge_is_not_found(make_api: ApiFactory, phone: Phone) -> None:
    tokens = {
        "alpha": "alpha-token-0123456789abcdef0123456789",
        "beta": "beta-token-0123456789abcdef01234567890",
    }
    api = await make_api(api_tokens=api_tokens(tokens, {"alpha": ["otp"], "beta": ["otp"]}))
    alpha = {"Authorization": f"Bearer {tokens['alpha']}"}
    beta = {"Authorization": f"Bearer {tokens['beta']}"}
    response = await api.post("/challenge", json={"phone": PHONE}, headers=alpha)
    challenge_id = response.json()["challenge_id"]
    code = await phone.code_for(challenge_id)
    for attempt in (
        api.get(f"/challenge/{challenge_id}", headers=beta),
        api.delete(f"/challenge/{challenge_id}", headers=beta),
        api.post("/verify", json={"challenge_id": challenge_id, "code": code}, headers=beta),
    ):
        assert_problem(await attempt, 404, "challenge_not_found")
    ok = await api.post("/verify", json={"challenge_id": challenge_id, "code": code}, headers=alpha)
    assert ok.status_code == 200


async def test_another_clients_new_challenge_leaves_the_pending_one_working(
    make_api: ApiFactory, phone: Phone
) -> None:
    # Before, client beta asking for a code for a number ended client alpha's pending one.
    tokens = {
        "alpha": "alpha-token-0123456789abcdef0123456789",
        "beta": "beta-token-0123456789abcdef01234567890",
    }
    api = await make_api(
        api_tokens=api_tokens(tokens, {"alpha": ["otp"], "beta": ["otp"]}),
        send_limits={"min_interval_seconds": 0, "per_hour": 4},
    )
    alpha = {"Authorization": f"Bearer {tokens['alpha']}"}
    beta = {"Authorization": f"Bearer {tokens['beta']}"}
    first = (await api.post("/challenge", json={"phone": PHONE}, headers=alpha)).json()
    first_code = await phone.code_for(first["challenge_id"])
    theirs = (await api.post("/challenge", json={"phone": PHONE}, headers=beta)).json()
    their_code = await phone.code_for(theirs["challenge_id"])
    state = (await api.get(f"/challenge/{first['challenge_id']}", headers=alpha)).json()
    assert state["status"] == "pending"
    for headers, challenge, code in ((alpha, first, first_code), (beta, theirs, their_code)):
        verify = {"challenge_id": challenge["challenge_id"], "code": code}
        assert (await api.post("/verify", json=verify, headers=headers)).status_code == 200
    # A client's own new challenge still replaces its pending one.
    old = (await api.post("/challenge", json={"phone": PHONE}, headers=alpha)).json()
    old_code = await phone.code_for(old["challenge_id"])
    assert (await api.post("/challenge", json={"phone": PHONE}, headers=alpha)).status_code == 201
    replaced = {"challenge_id": old["challenge_id"], "code": old_code}
    assert_problem(
        await api.post("/verify", json=replaced, headers=alpha), 410, "challenge_expired"
    )
    # The number's own limits are shared: the fourth send of the hour was alpha's, so beta is
    # refused, with the exact wait (a client can learn the number was sent codes recently).
    refused = await api.post("/challenge", json={"phone": PHONE}, headers=beta)
    assert assert_problem(refused, 429, "rate_limited")["rule"] == "number_per_hour"


async def test_a_challenge_of_the_release_before_is_current_by_its_one_active_key(
    api: httpx.AsyncClient, phone: Phone, redis: Redis
) -> None:
    # The release before kept one "active" string per number and no per-client hash; a
    # challenge it issued stays usable through the deploy, and new ones write both.
    challenge_id, code = await issue_code(api, phone)
    [actives] = [key async for key in redis.scan_iter("otp:*:actives")]
    [active] = [key async for key in redis.scan_iter("otp:*:active")]
    assert await redis.hget(actives, "default") == await redis.get(active)
    await redis.delete(actives)  # as the release before left it
    assert (await api.get(f"/challenge/{challenge_id}")).json()["status"] == "pending"
    ok = await api.post("/verify", json={"challenge_id": challenge_id, "code": code})
    assert ok.status_code == 200


async def test_tokens_are_required_and_scoped(make_api: ApiFactory, phone: Phone) -> None:
    tokens = {
        "login": "login-token-0123456789abcdef012345678",
        "ops": "ops-token-0123456789abcdef0123456789",
    }
    api = await make_api(api_tokens=api_tokens(tokens, {"login": ["otp"], "ops": ["admin"]}))
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": tokens["login"]}):
        response = await api.post("/challenge", json={"phone": PHONE}, headers=headers)
        assert_problem(response, 401, "unauthorized")
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert_problem(await api.get("/challenge/x.y", headers=headers), 401, "unauthorized")
    assert_problem(
        await api.post(
            "/challenge",
            json={"phone": PHONE},
            headers={"Authorization": f"Bearer {tokens['ops']}"},
        ),
        403,
        "forbidden",
    )
    assert (await phone.sent()) == []
    ok = await api.post(
        "/challenge", json={"phone": PHONE}, headers={"Authorization": f"Bearer {tokens['login']}"}
    )
    assert ok.status_code == 201
    # Health routes stay open for probes; everything else (the spec too) needs a token.
    assert (await api.get("/healthz")).status_code == 200
    assert (await api.get("/readyz")).status_code == 200
    assert_problem(await api.get("/openapi/openapi.json"), 401, "unauthorized")
    login = {"Authorization": f"Bearer {tokens['login']}"}
    assert_problem(await api.get("/openapi/openapi.json", headers=login), 403, "forbidden")
    ops = {"Authorization": f"Bearer {tokens['ops']}"}
    assert (await api.get("/openapi/openapi.json", headers=ops)).status_code == 200


async def test_idempotency_key_replays_the_same_challenge(
    api: httpx.AsyncClient, phone: Phone, redis: Redis
) -> None:
    headers = {"Idempotency-Key": "login-attempt-42"}
    first = await api.post("/challenge", json={"phone": PHONE}, headers=headers)
    second = await api.post("/challenge", json={"phone": PHONE}, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert second.headers["idempotent-replayed"] == "true"
    assert len(await phone.sent()) == 1
    # The record is kept for 24 hours.
    [record] = [key async for key in redis.scan_iter("otp:idem:*")]
    assert 86400 - 5 <= await redis.ttl(record) <= 86400
    other = await api.post("/challenge", json={"phone": "+14155550124"}, headers=headers)
    assert_problem(other, 422, "idempotency_key_reused")
    assert len(await phone.sent()) == 1


async def test_a_keyed_challenge_in_doubt_is_finished_by_its_retry_whatever_the_records_bytes(
    api: httpx.AsyncClient, phone: Phone, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = api._transport.app.state.runtime  # type: ignore[attr-defined]
    outbox = runtime.stores.outbox
    headers = {"Idempotency-Key": "in-doubt-bytes"}

    async def perhaps_queued(*args: object, **kwargs: object) -> int:
        raise QueueWriteInDoubt(0)  # a timeout after the write: it may be on shard 0

    monkeypatch.setattr(outbox, "add", perhaps_queued)
    first = await api.post("/challenge", json={"phone": PHONE}, headers=headers)
    assert_problem(first, 503, "store_unavailable")
    monkeypatch.undo()
    # The record as another release may have written it: the same fields, in another order
    # (a compare-and-swap of its re-encoding would never match, and every retry be a 409).
    [key] = [k async for k in redis.scan_iter("otp:idem:*")]
    fields = msgspec.msgpack.decode(await redis.get(key))
    in_doubt = fields["in_doubt"]["challenge_id"]
    reordered = dict(reversed(list(fields.items())))
    await redis.set(key, msgspec.msgpack.encode(reordered), keepttl=True)
    issued_before = (await api.get("/analytics")).json()["total"]["issued"]

    retry = await api.post("/challenge", json={"phone": PHONE}, headers=headers)
    assert retry.status_code == 201, retry.text
    assert retry.json()["challenge_id"] == in_doubt  # the first request's challenge
    code = await phone.code_for(in_doubt)
    assert len(await phone.sent()) == 1
    assert (await verify(api, in_doubt, code)).status_code == 200
    # Counted as issued once, by the retry that finished it.
    assert (await api.get("/analytics")).json()["total"]["issued"] == issued_before + 1


async def test_concurrent_retries_with_one_idempotency_key_send_one_sms(
    api: httpx.AsyncClient, phone: Phone
) -> None:
    headers = {"Idempotency-Key": "double-click"}
    responses = await asyncio.gather(
        *(api.post("/challenge", json={"phone": PHONE}, headers=headers) for _ in range(10))
    )
    assert len(await phone.sent()) == 1
    created = {r.json()["challenge_id"] for r in responses if r.status_code == 201}
    assert len(created) == 1
    assert {r.json()["code"] for r in responses if r.status_code != 201} <= {
        "idempotency_key_in_use"
    }


async def test_idempotency_keys_are_scoped_per_client(make_api: ApiFactory, phone: Phone) -> None:
    tokens = {
        "alpha": "alpha-token-0123456789abcdef0123456789",
        "beta": "beta-token-0123456789abcdef01234567890",
    }
    api = await make_api(
        api_tokens=api_tokens(tokens, {"alpha": ["otp"], "beta": ["otp"]}),
        send_limits={"min_interval_seconds": 0},
    )
    key = {"Idempotency-Key": "same-key"}
    a = await api.post(
        "/challenge",
        json={"phone": PHONE},
        headers={**key, "Authorization": f"Bearer {tokens['alpha']}"},
    )
    # Sent before the next one replaces it (a replaced challenge's SMS is not sent).
    await phone.code_for(a.json()["challenge_id"])
    b = await api.post(
        "/challenge",
        json={"phone": PHONE},
        headers={**key, "Authorization": f"Bearer {tokens['beta']}"},
    )
    assert a.status_code == b.status_code == 201
    assert a.json()["challenge_id"] != b.json()["challenge_id"]
    assert len(await phone.sent()) == 2


async def test_a_refused_idempotent_request_can_be_retried(
    make_api: ApiFactory, phone: Phone
) -> None:
    api = await make_api(send_limits={"min_interval_seconds": 1})
    await issue(api)
    headers = {"Idempotency-Key": "retry-me"}
    assert (await api.post("/challenge", json={"phone": PHONE}, headers=headers)).status_code == 429
    await asyncio.sleep(1.05)
    assert (await api.post("/challenge", json={"phone": PHONE}, headers=headers)).status_code == 201


async def test_unknown_ids_take_a_hash_like_known_ones(
    counted: Callable[..., Any], phone: Phone
) -> None:
    api, hasher = await counted()
    challenge_id, code = await issue_code(api, phone)
    before = hasher.evaluations
    await verify(api, challenge_id, wrong(code))
    unknown = await verify(api, challenge_id.split(".")[0] + ".AAAAAAAAAAAAAAAAAAAAAA", code)
    assert_problem(unknown, 404, "challenge_not_found")
    assert hasher.evaluations - before == 2
    # A malformed id has no secret to hide (the format is public): refused without a hash.
    assert_problem(await verify(api, "garbage", code), 404, "challenge_not_found")
    assert hasher.evaluations - before == 2


async def test_an_altered_id_and_another_clients_id_each_cost_one_hash_and_say_nothing(
    counted: Callable[..., Any], phone: Phone
) -> None:
    # The red team's timing check, by counting hashes instead of measuring time: neither an id
    # changed in one character nor a challenge of another client answers faster (no hash) or
    # differently (404 both) than a wrong guess.
    tokens = {
        "alpha": "alpha-token-0123456789abcdef0123456789",
        "beta": "beta-token-0123456789abcdef01234567890",
    }
    api, hasher = await counted(api_tokens=api_tokens(tokens, {"alpha": ["otp"], "beta": ["otp"]}))
    alpha = {"Authorization": f"Bearer {tokens['alpha']}"}
    beta = {"Authorization": f"Bearer {tokens['beta']}"}
    created = await api.post("/challenge", json={"phone": PHONE}, headers=alpha)
    challenge_id = created.json()["challenge_id"]
    code = await phone.code_for(challenge_id)
    last = challenge_id[-1]
    altered = challenge_id[:-1] + ("A" if last != "A" else "B")
    for caller, target in ((alpha, altered), (beta, challenge_id)):
        before = hasher.evaluations
        answer = await api.post(
            "/verify", json={"challenge_id": target, "code": code}, headers=caller
        )
        assert_problem(answer, 404, "challenge_not_found")
        assert hasher.evaluations - before == 1
    # Neither touched alpha's challenge: its budget is whole and its code still approves.
    state = (await api.get(f"/challenge/{challenge_id}", headers=alpha)).json()
    assert state["attempts_left"] == 5
    ok = await api.post("/verify", json={"challenge_id": challenge_id, "code": code}, headers=alpha)
    assert ok.status_code == 200


async def test_opaque_ids_unlink_a_numbers_challenges_and_a_forged_one_costs_one_hash(
    counted: Callable[..., Any], phone: Phone
) -> None:
    # Before, every id of a number began with the same 16 characters, across clients and time.
    plain_api, _ = await counted(send_limits={"min_interval_seconds": 0})
    old_id, old_code = await issue_code(plain_api, phone)
    api, hasher = await counted(ids={"opaque": True}, send_limits={"min_interval_seconds": 0})
    first, first_code = await issue_code(api, phone)
    second, second_code = await issue_code(api, phone)
    assert first[:8] != second[:8]
    assert old_id.split(".")[0] not in first + second
    # The newest is the number's current challenge, found without a lookup; the one before it
    # was replaced, as with plain ids.
    assert (await verify(api, second, second_code)).status_code == 200
    assert_problem(await verify(api, first, first_code), 410, "challenge_expired")
    # A block no key made: 404 after one throw-away hash, the same as an unknown id.
    block, random_part = second.split(".")
    forged = block[:5] + ("A" if block[5] != "A" else "B") + block[6:] + "." + random_part
    before = hasher.evaluations
    assert_problem(await verify(api, forged, second_code), 404, "challenge_not_found")
    assert hasher.evaluations - before == 1
    assert_problem(await api.get(f"/challenge/{forged}"), 404, "challenge_not_found")
    # A challenge issued with a plain id, before the switch, still verifies.
    # (410, not 404: found by its plain id, and replaced since by the newer ones.)
    assert (await verify(api, old_id, old_code)).status_code == 410
    third_plain, third_code = await issue_code(plain_api, phone)
    assert (await verify(api, third_plain, third_code)).status_code == 200


async def test_refused_sends_cost_no_hash(counted: Callable[..., Any], phone: Phone) -> None:
    api, hasher = await counted()
    await issue(api)
    before = hasher.evaluations
    for _ in range(20):
        assert_problem(await api.post("/challenge", json={"phone": PHONE}), 429, "rate_limited")
    assert hasher.evaluations == before


async def test_a_right_code_near_the_limit_does_not_lengthen_later_lockouts(
    make_api: ApiFactory, phone: Phone
) -> None:
    api = await make_api(
        send_limits={"min_interval_seconds": 0, "per_hour": 100, "per_day": 100},
        lockout={"max_failures": 3, "base_seconds": 60},
    )
    challenge_id, code = await issue_code(api, phone)
    assert_problem(await verify(api, challenge_id, wrong(code)), 400, "incorrect_code")
    assert_problem(await verify(api, challenge_id, wrong(code)), 400, "incorrect_code")
    assert (await verify(api, challenge_id, code)).status_code == 200
    # The success reset the count: three fresh failures give the first lock, not a doubled one.
    challenge_id, code = await issue_code(api, phone)
    assert_problem(await verify(api, challenge_id, wrong(code)), 400, "incorrect_code")
    assert_problem(await verify(api, challenge_id, wrong(code)), 400, "incorrect_code")
    body = assert_problem(await verify(api, challenge_id, wrong(code)), 429, "number_locked")
    assert body["retry_after"] == 60


async def test_idempotent_replay_shows_the_challenge_as_it_is_now(
    api: httpx.AsyncClient, phone: Phone
) -> None:
    headers = {"Idempotency-Key": "replay-after-use"}
    first = await api.post("/challenge", json={"phone": PHONE}, headers=headers)
    challenge_id = first.json()["challenge_id"]
    assert (await verify(api, challenge_id, await phone.code_for(challenge_id))).status_code == 200
    replay = await api.post("/challenge", json={"phone": PHONE}, headers=headers)
    assert replay.status_code == 201
    assert replay.json()["challenge_id"] == challenge_id
    assert replay.json()["status"] == "approved"
    assert len(await phone.sent()) == 1


async def test_empty_idempotency_key_is_refused(api: httpx.AsyncClient, phone: Phone) -> None:
    response = await api.post("/challenge", json={"phone": PHONE}, headers={"Idempotency-Key": ""})
    assert_problem(response, 400, "invalid_request")
    assert (await phone.sent()) == []


async def test_hashing_flood_gets_503_with_retry_after(
    counted: Callable[..., Any], phone: Phone
) -> None:
    api, _ = await counted(
        hashing={"max_concurrent": 1, "max_waiting": 2, "memory_kib": 8192, "time_cost": 3},
        code={"max_attempts": 10},
    )
    challenge_id, code = await issue_code(api, phone)
    responses = await asyncio.gather(*(verify(api, challenge_id, wrong(code)) for _ in range(10)))
    busy = [r for r in responses if r.status_code == 503]
    assert busy, [r.status_code for r in responses]
    for response in busy:
        assert_problem(response, 503, "hashing_busy")
        assert response.headers["retry-after"] == "1"
    # A refusal for load spends no attempt.
    checked = len(responses) - len(busy)
    state = (await api.get(f"/challenge/{challenge_id}")).json()
    assert state["attempts_left"] == 10 - checked


async def test_pepper_rotation_keeps_live_codes(
    redis: Redis, redis_server: RedisServer, make_settings: Callable[..., Settings], phone: Phone
) -> None:
    old = make_settings(redis_server.url)
    rotated = make_settings(
        redis_server.url,
        secrets={
            "pepper": "a-brand-new-pepper-0123456789",
            "previous_pepper": PEPPER,
            "index_key": INDEX_KEY,
        },
    )
    async with running(phone.watch(create_app(old, redis=redis, sms=phone.sender))) as before:
        challenge_id = (await issue(before))["challenge_id"]
    async with running(phone.watch(create_app(rotated, redis=redis, sms=phone.sender))) as after:
        response = await verify(after, challenge_id, await phone.code_for(challenge_id))
    assert response.status_code == 200


class HeldHasher(CodeHasher):
    """Checks codes only once released, so attempts stay in flight as long as a test wants."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.release = asyncio.Event()
        self.held = 0

    async def check_code(self, challenge_id: str, code: str, stored: Any) -> bool:
        self.held += 1
        await self.release.wait()
        return await super().check_code(challenge_id, code, stored)


@pytest.fixture
async def held(
    redis: Redis, redis_server: RedisServer, make_settings: Callable[..., Settings], phone: Phone
) -> AsyncIterator[tuple[httpx.AsyncClient, HeldHasher]]:
    settings = make_settings(
        redis_server.url,
        send_limits={"min_interval_seconds": 0, "per_hour": 100, "per_day": 100},
        lockout={"max_failures": 10, "base_seconds": 60},
    )
    hasher = HeldHasher(settings.hashing, Pepper(PEPPER))
    async with running(
        phone.watch(create_app(settings, redis=redis, sms=phone.sender, hasher=hasher))
    ) as api:
        yield api, hasher


async def test_guesses_in_flight_across_new_codes_never_exceed_the_failure_limit(
    held: tuple[httpx.AsyncClient, HeldHasher], phone: Phone
) -> None:
    api, hasher = held
    pending = []
    # Three fresh codes, five guesses each, all held mid-check: only ten may be in flight.
    for _ in range(3):
        challenge_id, code = await issue_code(api, phone)
        for _ in range(5):
            pending.append(asyncio.create_task(verify(api, challenge_id, wrong(code))))
        await asyncio.sleep(0.05)
    assert hasher.held == 10
    refused = [task for task in pending if task.done()]
    assert len(refused) == 5
    for task in refused:
        assert_problem(task.result(), 429, "number_locked")
    hasher.release.set()
    answers = Counter(response.json()["code"] for response in await asyncio.gather(*pending))
    assert hasher.held == 10
    # The tenth settled failure locks the number.
    assert answers["number_locked"] >= 6
    assert_problem(await api.post("/challenge", json={"phone": PHONE}), 429, "number_locked")


async def test_a_right_code_in_flight_with_failures_near_the_limit_is_not_locked_out(
    held: tuple[httpx.AsyncClient, HeldHasher], phone: Phone
) -> None:
    api, hasher = held
    hasher.release.set()
    for _ in range(8):
        challenge_id, code = await issue_code(api, phone)
        assert_problem(await verify(api, challenge_id, wrong(code)), 400, "incorrect_code")
    hasher.release.clear()
    challenge_id, code = await issue_code(api, phone)
    wrong_guess = asyncio.create_task(verify(api, challenge_id, wrong(code)))
    right_guess = asyncio.create_task(verify(api, challenge_id, code))
    await asyncio.sleep(0.05)
    hasher.release.set()
    assert_problem(await wrong_guess, 400, "incorrect_code")
    assert (await right_guess).status_code == 200
    # Nine real failures, then a success: the number is not locked.
    await issue(api)


async def test_every_route_but_health_needs_a_token(
    redis: Redis, redis_server: RedisServer, make_settings: Callable[..., Settings], phone: Phone
) -> None:
    tokens = {"login": "login-token-0123456789abcdef012345678"}
    settings = make_settings(redis_server.url, api_tokens=api_tokens(tokens, {"login": ["otp"]}))
    app = phone.watch(create_app(settings, redis=redis, sms=phone.sender))
    # Health and metrics are for probes and Prometheus: no token, and nothing personal.
    public = {"/healthz", "/readyz", "/metrics"}
    # The API docs page and its assets hold nothing secret; the spec they load needs a token.
    docs_page = ("/openapi/swagger", "/openapi/assets/")
    # Provider webhooks carry their own credentials: a shared secret (401 without it), a
    # Twilio signature (403 without it). Event Grid's OPTIONS handshake grants nothing.
    webhooks = {
        "/webhooks/acs": (401, "unauthorized"),
        "/webhooks/twilio/status": (403, "forbidden"),
        "/webhooks/twilio/inbound": (403, "forbidden"),
    }
    checked = 0
    async with running(app) as api:
        for route in app.routes:
            path = route.path.replace("{challenge_id:str}", "x.y").replace("{challenge_id}", "x.y")
            for method in sorted(getattr(route, "methods", ())):
                response = await api.request(method, path, json={})
                if route.path in public and method in ("GET", "HEAD"):
                    assert response.status_code != 401, (method, path)
                elif route.path in webhooks and method == "POST":
                    assert_problem(response, *webhooks[route.path])
                elif route.path == "/webhooks/acs" and method == "OPTIONS":
                    assert response.status_code == 200
                elif method == "OPTIONS":
                    # Only the methods, as a 405 tells anyone too.
                    assert response.status_code == 204, (method, path)
                    assert response.content == b""
                elif route.path.startswith(docs_page):
                    # The page, or no such asset (the route's path is a template here).
                    assert response.status_code in (200, 404), (method, path)
                else:
                    assert_problem(response, 401, "unauthorized")
                    checked += 1
    # Challenge routes and the OpenAPI document, at least.
    assert checked >= 6
    assert (await phone.sent()) == []


async def test_a_right_code_submitted_before_expiry_counts_even_if_checked_after(
    redis: Redis, redis_server: RedisServer, make_settings: Callable[..., Settings], phone: Phone
) -> None:
    settings = make_settings(redis_server.url, code={"ttl_seconds": 1})
    hasher = HeldHasher(settings.hashing, Pepper(PEPPER))
    async with running(
        phone.watch(create_app(settings, redis=redis, sms=phone.sender, hasher=hasher))
    ) as api:
        challenge_id, code = await issue_code(api, phone)
        checking = asyncio.create_task(verify(api, challenge_id, code))
        await asyncio.sleep(1.1)  # the challenge expires while its code is being checked
        hasher.release.set()
        assert (await checking).status_code == 200
        # Approved once, it stays used.
        assert_problem(await verify(api, challenge_id, code), 410, "challenge_used")


async def test_an_idempotent_replay_counts_down_resend_after(
    make_api: ApiFactory, phone: Phone
) -> None:
    api = await make_api(send_limits={"min_interval_seconds": 2})
    headers = {"Idempotency-Key": "count-down"}
    first = await api.post("/challenge", json={"phone": PHONE}, headers=headers)
    assert first.json()["resend_after"] == 2
    challenge_id = first.json()["challenge_id"]
    code = await phone.code_for(challenge_id)
    assert_problem(await verify(api, challenge_id, wrong(code)), 400, "incorrect_code")
    await asyncio.sleep(2.1)
    replay = await api.post("/challenge", json={"phone": PHONE}, headers=headers)
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json()["challenge_id"] == first.json()["challenge_id"]
    assert replay.json()["resend_after"] == 0  # the interval has passed: a new code may go now
    # The attempts left now, not those of the first answer.
    assert replay.json()["attempts_left"] == first.json()["attempts_left"] - 1
