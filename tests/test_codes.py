from __future__ import annotations

import asyncio
import collections
import threading
import time

import pytest

from otpservice import codes
from otpservice.codes import CodeHasher, Pepper, generate_code, is_well_formed_code
from otpservice.errors import HashingBusy
from otpservice.settings import HashingSettings

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


async def _check(hasher: CodeHasher, challenge_id: str, code: str, pid: str, h: str) -> bool:
    async with hasher.slot():
        return await hasher.check_code(challenge_id, code, pid, h)


async def test_hash_is_bound_to_its_challenge_and_pepper() -> None:
    hasher = CodeHasher(LIGHT, Pepper("pepper-one-0123456789abcdef"))
    async with hasher.slot():
        pepper_id, encoded = await hasher.hash_code("tag.challenge-a", "123456")
    assert encoded.startswith("$argon2id$")
    assert "123456" not in encoded
    assert await _check(hasher, "tag.challenge-a", "123456", pepper_id, encoded)
    assert not await _check(hasher, "tag.challenge-a", "123457", pepper_id, encoded)
    # The same hash moved to another challenge does not verify.
    assert not await _check(hasher, "tag.challenge-b", "123456", pepper_id, encoded)
    # Without the pepper (a Redis dump alone), the plain code does not match the hash.
    other = CodeHasher(LIGHT, Pepper("another-pepper-0123456789abc"))
    assert not await _check(other, "tag.challenge-a", "123456", pepper_id, encoded)
    hasher.close()
    other.close()


async def test_previous_pepper_keeps_live_codes_working_during_rotation() -> None:
    old, new = Pepper("old-pepper-0123456789abcdef"), Pepper("new-pepper-0123456789abcdef")
    before = CodeHasher(LIGHT, old)
    async with before.slot():
        pepper_id, encoded = await before.hash_code("t.c", "654321")
    rotating = CodeHasher(LIGHT, new, old)
    after = CodeHasher(LIGHT, new)
    assert await _check(rotating, "t.c", "654321", pepper_id, encoded)
    assert not await _check(after, "t.c", "654321", pepper_id, encoded)
    # One hash per guess: a rotated-out pepper costs one (decoy) evaluation, not one per pepper.
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
    real = hasher._matches

    def slow_matches(encoded: str, mac: bytes) -> bool:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.01)
        with lock:
            running -= 1
        return real(encoded, mac)

    monkeypatch.setattr(hasher, "_matches", slow_matches)
    async with hasher.slot():
        pid, encoded = await hasher.hash_code("t.c", "111111")
    await asyncio.gather(*(_check(hasher, "t.c", "111111", pid, encoded) for _ in range(20)))
    assert peak == 2
    hasher.close()


async def test_excess_hashing_requests_are_refused_not_queued_forever() -> None:
    hasher = CodeHasher(
        HashingSettings(
            memory_kib=1024, time_cost=1, max_concurrent=1, max_waiting=1, wait_timeout_seconds=0.2
        ),
        Pepper("pepper-one-0123456789abcdef"),
    )
    release = asyncio.Event()

    async def hold() -> None:
        async with hasher.slot():
            await release.wait()

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0)
    waiter = asyncio.create_task(hold())
    await asyncio.sleep(0)
    # One holds the slot, one waits: a third is refused at once.
    with pytest.raises(HashingBusy):
        async with hasher.slot():
            pass
    # The waiter gives up after the wait timeout.
    with pytest.raises(HashingBusy):
        await waiter
    release.set()
    await holder
    hasher.close()
