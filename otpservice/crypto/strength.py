"""How strong a secret looks: enough to refuse the plainly weak ones (a word, a repeated
character, an all-zero key), never a proof that one is random.

The estimate is the secret's length times log2 of the size of the character classes it uses
(lowercase, uppercase, digits, other printable ASCII, other bytes); a key given in base64 is
judged on its decoded bytes, each worth 8 bits. ``openssl rand -hex 32`` (64 characters of 36
possible: about 330 bits) and ``otpservice secrets generate`` pass.
"""

from __future__ import annotations

import math
from collections import Counter

MIN_BITS = 128
MIN_DISTINCT = 8
MAX_SHARE = 0.25  # of the secret's symbols, the most one symbol may be

_CLASSES: tuple[tuple[range, int], ...] = (
    (range(ord("a"), ord("z") + 1), 26),
    (range(ord("A"), ord("Z") + 1), 26),
    (range(ord("0"), ord("9") + 1), 10),
)
_PRINTABLE = range(0x20, 0x7F)
_OTHER_PRINTABLE = 95 - 62  # printable ASCII that is neither a letter nor a digit


def estimated_bits(value: bytes, *, binary: bool) -> float:
    """The estimate above: ``binary`` for decoded key bytes (8 bits each)."""
    if binary:
        return 8.0 * len(value)
    present = set(value)
    size = sum(n for span, n in _CLASSES if any(b in span for b in present))
    if any(b in _PRINTABLE and not any(b in span for span, _ in _CLASSES) for b in present):
        size += _OTHER_PRINTABLE
    if any(b not in _PRINTABLE for b in present):
        size += 256 - 95
    return len(value) * math.log2(size) if size > 1 else 0.0


def weakness(value: bytes, *, binary: bool = False) -> str | None:
    """Why ``value`` is too weak for a secret (None: it looks strong enough)."""
    if binary and not any(value):
        return "it is all zero bytes"
    bits = estimated_bits(value, binary=binary)
    if bits < MIN_BITS:
        return f"it holds about {bits:.0f} bits, under {MIN_BITS}"
    counts = Counter(value)
    if len(counts) < MIN_DISTINCT:
        return f"it uses {len(counts)} distinct symbols, under {MIN_DISTINCT}"
    share = max(counts.values()) / len(value)
    if share > MAX_SHARE:
        return f"one symbol makes up {share:.0%} of it, over {MAX_SHARE:.0%}"
    return None
