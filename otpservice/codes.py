"""One-time codes: generation, and the keyed argon2id hash Redis stores instead of the code.

What is stored is ``argon2id(HMAC-SHA256(pepper, challenge_id + ":" + code))``. The pepper never
leaves the process, so a Redis dump alone does not allow guessing offline; the challenge id in
the HMAC stops a hash being moved to another challenge. argon2-cffi takes no key, hence the HMAC.
Hashing runs in a bounded thread pool (argon2 releases the GIL) behind a concurrency cap, so a
flood cannot push the process past its memory limit: callers hold a ``slot()`` while hashing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import secrets
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from otpservice.errors import HashingBusy

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from otpservice.settings import HashingSettings

T = TypeVar("T")


def generate_code(digits: int) -> str:
    """A uniformly random code of ``digits`` decimal digits, from the CSPRNG."""
    return str(secrets.randbelow(10**digits)).zfill(digits)


def is_well_formed_code(code: str, digits: int) -> bool:
    """True when ``code`` is exactly ``digits`` ASCII digits."""
    return len(code) == digits and code.isascii() and code.isdigit()


class Pepper:
    """A server-side secret keying the code hash; its ``id`` is derived, never the secret."""

    __slots__ = ("_key", "id")

    def __init__(self, secret: str) -> None:
        self._key = secret.encode()
        self.id = hmac.new(self._key, b"otpservice pepper id", hashlib.sha256).hexdigest()[:8]

    def mac(self, challenge_id: str, code: str) -> bytes:
        """HMAC-SHA256 of the challenge id and code under this pepper."""
        return hmac.new(self._key, f"{challenge_id}:{code}".encode(), hashlib.sha256).digest()

    def __repr__(self) -> str:
        return f"Pepper(id={self.id})"


class CodeHasher:
    """Hashes and checks codes with keyed argon2id, off the event loop, with a concurrency cap."""

    def __init__(
        self, settings: HashingSettings, current: Pepper, previous: Pepper | None = None
    ) -> None:
        self._hasher = PasswordHasher(
            time_cost=settings.time_cost,
            memory_cost=settings.memory_kib,
            parallelism=settings.parallelism,
        )
        self._current = current
        self._peppers = {p.id: p for p in (current, previous) if p is not None}
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._executor = ThreadPoolExecutor(
            max_workers=settings.concurrency, thread_name_prefix="argon2"
        )
        self._max_waiting = settings.max_waiting
        self._wait_timeout_seconds = settings.wait_timeout_seconds
        self._waiting = 0
        # Counted so tests and metrics can see how many argon2 evaluations really ran.
        self.evaluations = 0
        # A hash to check against when there is nothing real to check, for uniform timing.
        self._decoy = self._hasher.hash(secrets.token_bytes(32))

    async def hash_code(self, challenge_id: str, code: str) -> tuple[str, str]:
        """Return ``(pepper_id, argon2 hash)`` for the code of ``challenge_id``."""
        mac = self._current.mac(challenge_id, code)
        encoded = await self._run(self._hasher.hash, mac)
        return self._current.id, encoded

    async def check_code(
        self, challenge_id: str, code: str, pepper_id: str, encoded_hash: str
    ) -> bool:
        """True when ``code`` matches; the comparison inside argon2 is constant-time."""
        pepper = self._peppers.get(pepper_id)
        if pepper is None:
            # The pepper was rotated out: the code can no longer be checked. Spend the same time.
            await self.waste_time()
            return False
        return await self._run(self._matches, encoded_hash, pepper.mac(challenge_id, code))

    async def waste_time(self) -> None:
        """Run one throw-away check, so a refusal takes as long as a real check."""
        await self._run(self._matches, self._decoy, b"")

    def close(self) -> None:
        """Stop the hashing threads."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _matches(self, encoded_hash: str, mac: bytes) -> bool:
        try:
            return self._hasher.verify(encoded_hash, mac)
        except (VerificationError, InvalidHashError):
            return False

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the hashing slots; hash only inside one.

        Raises:
            HashingBusy: too many are waiting, or none freed up within the wait timeout.
        """
        if self._waiting >= self._max_waiting:
            raise HashingBusy("too many codes are being checked; retry shortly")
        self._waiting += 1
        try:
            async with asyncio.timeout(self._wait_timeout_seconds):
                await self._slots.acquire()
        except TimeoutError:
            raise HashingBusy("too many codes are being checked; retry shortly") from None
        finally:
            self._waiting -= 1
        try:
            yield
        finally:
            self._slots.release()

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        self.evaluations += 1
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
