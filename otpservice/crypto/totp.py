"""Authenticator-app codes (TOTP, RFC 6238) and recovery codes: the arithmetic, no storage.

``matching_step`` computes the code of every step in the window and compares each in constant
time, without an early exit, and returns the highest step that matched. The verdict then
approves only a step greater than the last one used (compare-and-set, in Redis), which is how
one code gives exactly one login; ``pyotp.TOTP.verify`` answers a bool and cannot do this.

Recovery codes are ten Crockford base32 characters (50 bits) behind a public slot number,
shown as ``N-XXXXX-XXXXX`` and read back however a person types them.

``TotpKeys`` holds what ``secrets.totp_key`` (and, while rotating, the previous key) stand for:
an AES-256-GCM key sealing each factor's secret and label, bound to the factor id, and an HMAC
key for the recovery codes, both derived with HKDF and named by a key id.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import TYPE_CHECKING, Literal

import pyotp
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from otpservice.crypto.sealing import NONCE_BYTES, SealError

if TYPE_CHECKING:
    from otpservice.models import TotpAlgorithm, TotpParams

# A secret as long as the hash's output (RFC 4226 section 4 asks for at least 128 bits).
SECRET_BYTES: dict[TotpAlgorithm, int] = {"SHA1": 20, "SHA256": 32, "SHA512": 64}
_DIGESTS = {"SHA1": hashlib.sha1, "SHA256": hashlib.sha256, "SHA512": hashlib.sha512}

RECOVERY_CODES = 10
RECOVERY_CODE_LENGTH = 10
# Crockford's base32: no I, L, O or U, so what is read aloud or copied by hand is not misread.
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_READ_AS = str.maketrans({"O": "0", "I": "1", "L": "1"})


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


# What a sealed value is: the additional data binds it to its kind and its factor (a subject:
# to its keys' tag), so a label cannot be opened as a secret, nor one factor's secret moved to
# another.
SealedKind = Literal["secret", "label", "subject"]


def _derive(key: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(key)


class _TotpKey:
    __slots__ = ("aead", "id", "recovery")

    def __init__(self, key: bytes) -> None:
        self.id = hmac.new(key, b"otpservice totp key id", hashlib.sha256).hexdigest()[:8]
        self.aead = AESGCM(_derive(key, b"otpservice totp sealing"))
        self.recovery = _derive(key, b"otpservice totp recovery codes")


class TotpKeys:
    """Seals factor secrets and labels, and keys recovery codes, under the current TOTP key;
    opens and checks under the current or the previous one (a rotation)."""

    def __init__(self, current: bytes, previous: bytes | None = None) -> None:
        self._current = _TotpKey(current)
        self._keys = {k.id: k for k in (self._current, *([_TotpKey(previous)] if previous else []))}

    @property
    def current_id(self) -> str:
        """The id of the key new factors and recovery codes are sealed and keyed with."""
        return self._current.id

    def seal(self, kind: SealedKind, plaintext: bytes, factor_id: str) -> str:
        """``"<key id>.<base64url nonce + ciphertext>"`` of ``plaintext``, bound to the factor."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._current.aead.encrypt(nonce, plaintext, _binding(kind, factor_id))
        return f"{self._current.id}.{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def open(self, kind: SealedKind, sealed_text: str, factor_id: str) -> bytes:
        """What ``seal`` sealed.

        Raises:
            SealError: the key is unknown (rotated out), or the value was altered or moved.
        """
        key_id, _, encoded = sealed_text.partition(".")
        key = self._keys.get(key_id)
        if key is None:
            raise SealError(f"no TOTP key with id {key_id}")
        try:
            raw = base64.urlsafe_b64decode(encoded)
            return key.aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], _binding(kind, factor_id))
        except (InvalidTag, ValueError):
            raise SealError("the sealed value does not open: altered or moved") from None

    def sealed_with_current(self, sealed_text: str) -> bool:
        """Whether ``sealed_text`` is under the current key (else it is sealed anew)."""
        return sealed_text.partition(".")[0] == self._current.id

    def recovery_mac(self, key_id: str, factor_id: str, slot: int, code: str) -> bytes | None:
        """HMAC-SHA256 of (factor id, slot, code) under the recovery key of ``key_id`` (what
        argon2id hashes), or None when that key is gone."""
        key = self._keys.get(key_id)
        if key is None:
            return None
        message = f"{factor_id}\0{slot}\0{code}".encode()
        return hmac.new(key.recovery, message, hashlib.sha256).digest()


def _binding(kind: SealedKind, factor_id: str) -> bytes:
    return f"otpservice totp {kind}\0{factor_id}".encode()
