"""What refusing a JSON key twice costs a ``/verify``: the check beside the body's decoding and
one hash, each measured in this run.

    uv run python -m bench.json_keys

Times, on this machine and in this process: ``refuse_duplicate_keys`` (``web/guards.py``) on a
``/verify`` body, msgspec decoding the same body into the request type (what Litestar does next
anyway), and one argon2id hash at the light (m = 8 MiB, t = 1) and default (OWASP, m = 19 MiB,
t = 2) profiles, the work each ``/verify`` does besides. Prints the median of five rounds of each
and the check's share of a ``/verify``'s hash. Prints figures only.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import msgspec
from argon2.low_level import Type, hash_secret_raw

from otpservice.web.guards import refuse_duplicate_keys
from otpservice.web.schemas import VerifyRequest

BODY = b'{"challenge_id":"JH_xDNF9eWsqdWmV.p0rL6TGtr_V1WVapR_3Jag","code":"123456"}'
ROUNDS = 5


def per_call_us(call: Callable[[], object], calls: int) -> float:
    """The median over ``ROUNDS`` of the time one call takes, in µs."""
    rounds = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(calls):
            call()
        rounds.append((time.perf_counter() - started) * 1e6 / calls)
    return statistics.median(rounds)


def argon2(memory_kib: int, time_cost: int) -> Callable[[], object]:
    """One hash of a code at a profile, as the service computes it."""
    return lambda: hash_secret_raw(
        b"123456",
        b"0123456789abcdef",
        time_cost=time_cost,
        memory_cost=memory_kib,
        parallelism=1,
        hash_len=32,
        type=Type.ID,
    )


def main() -> None:
    decoder = msgspec.json.Decoder(VerifyRequest)
    check = per_call_us(lambda: refuse_duplicate_keys(BODY), 20_000)
    decode = per_call_us(lambda: decoder.decode(BODY), 20_000)
    light = per_call_us(argon2(8192, 1), 20)
    default = per_call_us(argon2(19456, 2), 10)
    print(f"/verify body ({len(BODY)} bytes), medians of {ROUNDS} rounds:")
    print(f"  duplicate-key check      {check:8.2f} µs")
    print(f"  msgspec decode           {decode:8.2f} µs")
    print(f"  argon2id light (8 MiB)   {light:8.0f} µs   check = {check / light:.2%} of it")
    print(f"  argon2id default (OWASP) {default:8.0f} µs   check = {check / default:.2%} of it")


if __name__ == "__main__":
    main()
