"""TOTP arithmetic (RFC 6238) and recovery codes, before any storage."""

from __future__ import annotations

import pyotp
import pytest

from otpservice.crypto.totp import (
    CROCKFORD,
    SECRET_BYTES,
    code_at,
    matching_step,
    new_recovery_code,
    new_secret,
    otpauth_uri,
    read_recovery_code,
    shown_recovery_code,
)
from otpservice.models import TotpAlgorithm, TotpParams

# RFC 6238 Appendix B, with the seeds of erratum 2866 (one per hash, as long as its output).
SEEDS: dict[TotpAlgorithm, bytes] = {
    "SHA1": b"12345678901234567890",
    "SHA256": b"12345678901234567890123456789012",
    "SHA512": b"1234567890" * 6 + b"1234",
}
VECTORS: list[tuple[int, TotpAlgorithm, str]] = [
    (59, "SHA1", "94287082"),
    (59, "SHA256", "46119246"),
    (59, "SHA512", "90693936"),
    (1111111109, "SHA1", "07081804"),
    (1111111109, "SHA256", "68084774"),
    (1111111109, "SHA512", "25091201"),
    (1111111111, "SHA1", "14050471"),
    (1111111111, "SHA256", "67062674"),
    (1111111111, "SHA512", "99943326"),
    (1234567890, "SHA1", "89005924"),
    (1234567890, "SHA256", "91819424"),
    (1234567890, "SHA512", "93441116"),
    (2000000000, "SHA1", "69279037"),
    (2000000000, "SHA256", "90698825"),
    (2000000000, "SHA512", "38618901"),
    (20000000000, "SHA1", "65353130"),
    (20000000000, "SHA256", "77737706"),
    (20000000000, "SHA512", "47863826"),
]


@pytest.mark.parametrize(("time", "algorithm", "code"), VECTORS)
def test_rfc_6238_vectors(time: int, algorithm: TotpAlgorithm, code: str) -> None:
    params = TotpParams(digits=8, algorithm=algorithm)
    assert code_at(SEEDS[algorithm], params, time) == code
    assert matching_step(SEEDS[algorithm], params, code, time, window=0) == time // 30


def test_the_step_that_matched_in_the_window_is_returned() -> None:
    params, seed = TotpParams(), SEEDS["SHA1"]
    now = 1111111111
    step = now // 30
    previous, current, following = (code_at(seed, params, now + 30 * i) for i in (-1, 0, 1))
    assert matching_step(seed, params, current, now, window=1) == step
    assert matching_step(seed, params, previous, now, window=1) == step - 1
    assert matching_step(seed, params, following, now, window=1) == step + 1
    # Outside the window, or with no window, the neighbours do not match.
    assert matching_step(seed, params, previous, now, window=0) is None
    assert matching_step(seed, params, code_at(seed, params, now - 60), now, window=1) is None
    # The window's edges: the first and last second of a step.
    assert matching_step(seed, params, current, step * 30, window=0) == step
    assert matching_step(seed, params, current, step * 30 + 29.999, window=0) == step
    assert matching_step(seed, params, current, step * 30 + 30, window=0) is None


@pytest.mark.parametrize("algorithm", ["SHA1", "SHA256", "SHA512"])
def test_secrets_are_as_long_as_the_hash_and_the_uri_round_trips(
    algorithm: TotpAlgorithm,
) -> None:
    params = TotpParams(digits=8, period_seconds=60, algorithm=algorithm)
    secret = new_secret(params)
    assert len(secret) == SECRET_BYTES[algorithm]
    assert new_secret(params) != secret
    uri = otpauth_uri(secret, params, issuer="Acme Corp", label="alice@example.com")
    assert uri.startswith("otpauth://totp/Acme%20Corp:alice%40example.com?")
    parsed = pyotp.parse_uri(uri)
    assert isinstance(parsed, pyotp.TOTP)
    assert (parsed.issuer, parsed.name, parsed.digits, parsed.interval) == (
        "Acme Corp",
        "alice@example.com",
        8,
        60,
    )
    assert parsed.at(1234567890) == code_at(secret, params, 1234567890)


def test_recovery_codes_are_fifty_bits_of_crockford_read_back_as_people_type_them() -> None:
    codes = {new_recovery_code() for _ in range(200)}
    assert len(codes) == 200
    assert all(len(c) == 10 and set(c) <= set(CROCKFORD) for c in codes)
    code = "0A1B2C3D4E"
    shown = shown_recovery_code(7, code)
    assert shown == "7-0A1B2-C3D4E"
    for typed in (shown, "70a1b2c3d4e", " 7 0A1B2 C3D4E ", "7-OA1B2-C3D4E", "7-0A1B2-C3D4E\n"):
        assert read_recovery_code(typed) == (7, code)
    assert read_recovery_code("7-0AlB2-C3D4E") == (7, "0A1B2C3D4E")  # l read as 1
    for bad in (
        "",
        "7-0A1B2-C3D4",
        "77-0A1B2-C3D4E",
        "X-0A1B2-C3D4E",
        "7-0A1B2-C3D4U",
        "٧-0A1B2-C3D4E",
    ):
        assert read_recovery_code(bad) is None
