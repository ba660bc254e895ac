from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest

from otpservice.config.schema import HashingSettings
from otpservice.crypto import codes
from otpservice.crypto.codes import CodeHasher, Pepper, generate_code, is_well_formed_code
from otpservice.errors import HashingBusy
from otpservice.models import CodeHash

if TYPE_CHECKING:
    from collections.abc import Callable

LIGHT = HashingSettings(memory_kib=1024, time_cost=1)


def test_codes_come_from_the_csprng_over_the_whole_range(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[int] = []

    def fake_randbelow(n: int) -> int:
        asked.append(n)
        return 42

    monkeypatch.setattr(codes.secrets, "randbelow", fake_randbelow)
    assert generate_code(8) == "00000042"
    assert asked == [10**8]


def test_codes_are_uniform_per_digit() -> None:
    samples = [generate_code(6) for _ in range(20000)]
    assert all(len(c) == 6 and c.isdigit() for c in samples)
    for position in range(6):
        counts = collections.Counter(c[position] for c in samples)
        assert set(counts) == set("0123456789")
        # 2000 expected per digit; 5 sigma is about 212.
        assert all(abs(n - 2000) < 250 for n in counts.values()), counts


@pytest.mark.parametrize(
    ("code", "ok"),
    [
        ("123456", True),
        ("12345", False),
        ("1234567", False),
        ("12345a", False),
        (" 12345", False),
        ("١٢٣٤٥٦", False),  # Arabic-Indic digits pass str.isdigit() but are not ASCII
        ("１２３４５６", False),
    ],
)
def test_only_ascii_digits_of_the_exact_length_are_well_formed(code: str, ok: bool) -> None:
    assert is_well_formed_code(code, 6) is ok


def test_pepper_id_is_stable_and_reveals_nothing_of_the_secret() -> None:
    secret = "pepper-one-0123456789abcdef"
    assert Pepper(secret).id == Pepper(secret).id
    assert Pepper(secret).id != Pepper("pepper-two-0123456789abcdef").id
    assert secret not in repr(Pepper(secret))


async def _check(hasher: CodeHasher, challenge_id: str, code: str, stored: CodeHash) -> bool:
    with hasher.admit():
        return await hasher.check_code(challenge_id, code, stored)


async def test_hash_is_bound_to_its_challenge_and_pepper() -> None:
    hasher = CodeHasher(LIGHT, Pepper("pepper-one-0123456789abcdef"))
    stored = await hasher.hash_code("tag.challenge-a", "123456")
    # Raw salt and digest: 48 bytes, so Redis keeps the challenge hash in its compact encoding.
    assert len(stored.digest) == 48
    assert stored.params == "1024,1,1"
    assert b"123456" not in stored.digest
    assert await _check(hasher, "tag.challenge-a", "123456", stored)
    assert not await _check(hasher, "tag.challenge-a", "123457", stored)
    # The same hash moved to another challenge does not verify.
    assert not await _check(hasher, "tag.challenge-b", "123456", stored)
    # Without the pepper (a Redis dump alone), the plain code does not match the hash.
    other = CodeHasher(LIGHT, Pepper("another-pepper-0123456789abc"))
    assert not await _check(other, "tag.challenge-a", "123456", stored)
    hasher.close()
    other.close()


async def test_codes_hashed_under_old_parameters_still_verify() -> None:
    before = CodeHasher(LIGHT, Pepper("pepper-one-0123456789abcdef"))
    stored = await before.hash_code("t.c", "222222")
    after = CodeHasher(
        HashingSettings(memory_kib=2048, time_cost=2), Pepper("pepper-one-0123456789abcdef")
    )
    assert await _check(after, "t.c", "222222", stored)
    before.close()
    after.close()


async def test_previous_pepper_keeps_live_codes_working_during_rotation() -> None:
    old, new = Pepper("old-pepper-0123456789abcdef"), Pepper("new-pepper-0123456789abcdef")
    before = CodeHasher(LIGHT, old)
    stored = await before.hash_code("t.c", "654321")
    rotating = CodeHasher(LIGHT, new, old)
    after = CodeHasher(LIGHT, new)
    assert await _check(rotating, "t.c", "654321", stored)
    assert not await _check(after, "t.c", "654321", stored)
    # One hash per guess: a rotated-out pepper costs one (decoy) evaluation, not one per pepper.
    assert rotating.evaluations == 1
    assert after.evaluations == 1
    for h in (before, rotating, after):
        h.close()


async def test_hashing_concurrency_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    hasher = CodeHasher(
        HashingSettings(memory_kib=1024, time_cost=1, max_concurrent=2, max_waiting=100),
        Pepper("pepper-one-0123456789abcdef"),
    )
    running = 0
    peak = 0
    lock = threading.Lock()
    real = codes.hash_secret_raw

    def slow_hash(*args: Any, **kwargs: Any) -> bytes:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.01)
        with lock:
            running -= 1
        return real(*args, **kwargs)

    monkeypatch.setattr(codes, "hash_secret_raw", slow_hash)
    stored = await hasher.hash_code("t.c", "111111")
    results = await asyncio.gather(*(_check(hasher, "t.c", "111111", stored) for _ in range(20)))
    assert all(results)
    assert peak == 2
    hasher.close()


async def test_admission_beyond_the_queue_is_refused_at_once() -> None:
    hasher = CodeHasher(
        HashingSettings(memory_kib=1024, time_cost=1, max_concurrent=1, max_waiting=2),
        Pepper("pepper-one-0123456789abcdef"),
    )
    with contextlib.ExitStack() as held:
        for _ in range(3):  # one running plus two waiting
            held.enter_context(hasher.admit())
        with pytest.raises(HashingBusy), hasher.admit():
            pass
    # Released: admitted again.
    with hasher.admit():
        pass
    hasher.close()


async def test_admission_is_given_back_when_the_work_fails() -> None:
    hasher = CodeHasher(
        HashingSettings(memory_kib=1024, time_cost=1, max_concurrent=1, max_waiting=1),
        Pepper("pepper-one-0123456789abcdef"),
    )
    for _ in range(5):  # more failures than admission places
        with pytest.raises(RuntimeError), hasher.admit():
            raise RuntimeError("the store went away")
    with hasher.admit(), hasher.admit():
        pass
    hasher.close()


async def test_hash_parameters_read_back_from_the_store_are_bounded() -> None:
    hasher = CodeHasher(LIGHT, Pepper("pepper-one-0123456789abcdef"))
    stored = await hasher.hash_code("t.c", "333333")
    # Someone who can write to Redis must not make a check allocate gigabytes.
    for params in ("4194304,1,1", "1024,1000,1", "1024,1,64", "nonsense"):
        forged = CodeHash(pepper_id=stored.pepper_id, params=params, digest=stored.digest)
        assert not await _check(hasher, "t.c", "333333", forged)
    hasher.close()


async def test_hashing_threads_hand_back_results_and_errors_without_blocking_the_loop() -> None:
    threads = codes.HashingThreads(1, "test")
    release = threading.Event()

    def waits() -> bytes:
        release.wait(5)
        return b"done"

    def fails() -> bytes:
        raise ValueError("argon2 refused the parameters")

    pending = threads.run(waits)
    await asyncio.sleep(0.05)
    assert not pending.done()  # the loop runs on while the thread works
    release.set()
    assert await asyncio.wait_for(pending, 5) == b"done"
    with pytest.raises(ValueError, match="refused"):
        await asyncio.wait_for(threads.run(fails), 5)
    threads.close()


async def _occupy(threads: codes.HashingThreads) -> tuple[asyncio.Future[bytes], threading.Event]:
    """Give the (single) hashing thread a job that runs until the returned event is set."""
    started, release = threading.Event(), threading.Event()

    def first() -> bytes:
        started.set()
        release.wait(5)
        return b"first"

    running = threads.run(first)
    assert await asyncio.to_thread(started.wait, 5)
    return running, release


def _recording(ran: list[str], name: str) -> Callable[[], bytes]:
    """A job that notes in ``ran`` that it ran."""

    def job() -> bytes:
        ran.append(name)
        return name.encode()

    return job


async def test_closing_the_hashing_threads_refuses_queued_and_later_work() -> None:
    threads = codes.HashingThreads(1, "test")
    running, release = await _occupy(threads)
    ran: list[str] = []
    waiting = threads.run(_recording(ran, "queued"))
    threads.close()
    release.set()
    assert await asyncio.wait_for(running, 5) == b"first"  # the job under way finishes
    with pytest.raises(HashingBusy):  # a 503 with Retry-After, not a hang or a 500
        await asyncio.wait_for(waiting, 5)
    with pytest.raises(HashingBusy):
        threads.run(_recording(ran, "late"))
    await asyncio.sleep(0.05)
    assert ran == []
    threads.close()  # a second close changes nothing


async def test_a_cancelled_caller_costs_no_hash() -> None:
    threads = codes.HashingThreads(1, "test")
    running, release = await _occupy(threads)
    ran: list[str] = []
    gone = threads.run(_recording(ran, "abandoned"))
    gone.cancel()  # its request was cancelled while it waited for a thread
    release.set()
    await asyncio.wait_for(running, 5)
    assert await asyncio.wait_for(threads.run(lambda: b"next"), 5) == b"next"
    assert ran == []
    threads.close()
