"""Authenticator-app codes (TOTP, RFC 6238) and recovery codes: the arithmetic, no storage.

``matching_step`` computes the code of every step in the window and compares each in constant
time, without an early exit, and returns the highest step that matched. The verdict then
approves only a step greater than the last one used (compare-and-set, in Redis), which is how
one code gives exactly one login; ``pyotp.TOTP.verify`` answers a bool and cannot do this.

Recovery codes are ten Crockford base32 characters (50 bits) behind a public slot number,
shown as ``N-XXXXX-XXXXX`` and read back however a person types them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Literal

import pyotp

TotpAlgorithm = Literal["SHA1", "SHA256", "SHA512"]
# A secret as long as the hash's output (RFC 4226 section 4 asks for at least 128 bits).
SECRET_BYTES: dict[TotpAlgorithm, int] = {"SHA1": 20, "SHA256": 32, "SHA512": 64}
_DIGESTS = {"SHA1": hashlib.sha1, "SHA256": hashlib.sha256, "SHA512": hashlib.sha512}

RECOVERY_CODES = 10
RECOVERY_CODE_LENGTH = 10
# Crockford's base32: no I, L, O or U, so what is read aloud or copied by hand is not misread.
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_READ_AS = str.maketrans({"O": "0", "I": "1", "L": "1"})


@dataclass(frozen=True, slots=True)
class TotpParams:
    """A factor's code parameters, fixed at enrolment (a config change applies to new ones)."""

    digits: Literal[6, 8] = 6
    period_seconds: int = 30
    algorithm: TotpAlgorithm = "SHA1"


def new_secret(params: TotpParams) -> bytes:
    """A fresh secret of the length the factor's hash outputs."""
    return secrets.token_bytes(SECRET_BYTES[params.algorithm])


def _totp(secret: bytes, params: TotpParams) -> pyotp.TOTP:
    return pyotp.TOTP(
        base64.b32encode(secret).decode(),
        digits=params.digits,
        digest=_DIGESTS[params.algorithm],
        interval=params.period_seconds,
    )


def code_at(secret: bytes, params: TotpParams, now_s: float) -> str:
    """The code of the step ``now_s`` falls in (for tests and the enrolment check)."""
    return _totp(secret, params).generate_otp(int(now_s // params.period_seconds))


def matching_step(
    secret: bytes, params: TotpParams, code: str, now_s: float, window: int
) -> int | None:
    """The highest step from ``window`` steps before to ``window`` after the one ``now_s``
    falls in whose code is ``code``, or None. Every step of the window is compared, in
    constant time, whatever matched before."""
    totp = _totp(secret, params)
    step = int(now_s // params.period_seconds)
    matched: int | None = None
    typed = code.encode()
    for offset in range(-window, window + 1):
        # The step counter itself, not pyotp's ``at``, which goes through local time.
        expected = totp.generate_otp(step + offset).encode()
        if hmac.compare_digest(expected, typed):
            matched = step + offset  # offsets ascend: the last match is the highest step
    return matched


def otpauth_uri(secret: bytes, params: TotpParams, *, issuer: str, label: str) -> str:
    """The ``otpauth://totp/`` URI an authenticator app scans: issuer in the label and in the
    ``issuer`` parameter (Google's Key Uri Format), and the factor's parameters."""
    return pyotp.utils.build_uri(
        base64.b32encode(secret).decode().rstrip("="),
        label,
        issuer=issuer,
        algorithm=params.algorithm.lower(),
        digits=params.digits,
        period=params.period_seconds,
    )


def new_recovery_code() -> str:
    """Ten random Crockford base32 characters: 50 bits."""
    return "".join(secrets.choice(CROCKFORD) for _ in range(RECOVERY_CODE_LENGTH))


def shown_recovery_code(slot: int, code: str) -> str:
    """How a recovery code is shown: ``N-XXXXX-XXXXX``, N its slot (0 to 9)."""
    return f"{slot}-{code[:5]}-{code[5:]}"


def read_recovery_code(typed: str) -> tuple[int, str] | None:
    """The slot and code a person typed, in any case, with or without ``-`` and spaces, O
    read as 0 and I or L as 1; None when it cannot be one."""
    text = "".join(typed.split()).replace("-", "").upper().translate(_READ_AS)
    if len(text) != 1 + RECOVERY_CODE_LENGTH or not text[0].isdigit() or not text.isascii():
        return None
    code = text[1:]
    if any(character not in CROCKFORD for character in code):
        return None
    return int(text[0]), code
