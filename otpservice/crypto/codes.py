"""One-time codes: generation, and the keyed argon2id hash Redis stores instead of the code.

What is stored is ``argon2id(HMAC-SHA256(pepper, challenge_id + ":" + code))`` as raw salt and
digest (48 bytes), with the pepper id and the argon2 parameters beside it. The pepper never
leaves the process, so a Redis dump alone does not allow guessing offline; the challenge id in
the HMAC stops a hash being moved to another challenge. argon2-cffi takes no key, hence the HMAC.
Hashing runs on ``HashingThreads``, one thread per allowed concurrent hash (argon2 releases the
GIL), so memory stays bounded; callers are admitted (``admit()``) before they spend anything, and
the excess is refused at once instead of queueing without end.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import queue
import secrets
import threading
from typing import TYPE_CHECKING

from argon2 import PasswordHasher, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError
from argon2.low_level import Type, hash_secret_raw

from otpservice.errors import HashingBusy
from otpservice.models import CodeHash

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from otpservice.config.schema import HashingSettings


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


class HashingThreads:
    """Threads that run hashes for the event loop, one hash per thread at a time.

    Used instead of ``loop.run_in_executor`` with a ``ThreadPoolExecutor``, whose futures, locks
    and idle semaphore cost the event-loop thread about 40 µs more per hash under load: time
    taken from hashing on the same cores (see the README's architecture notes). Here a job is
    one queue put, and its result one ``call_soon_threadsafe``.
    """

    def __init__(self, count: int, name: str) -> None:
        self._jobs: queue.SimpleQueue[
            tuple[asyncio.AbstractEventLoop, asyncio.Future[bytes], Callable[[], bytes]] | None
        ] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._serve, name=f"{name}_{i}", daemon=True)
            for i in range(count)
        ]
        for thread in self._threads:
            thread.start()
        self._closed = False

    def run(self, job: Callable[[], bytes]) -> asyncio.Future[bytes]:
        """Queue ``job``; its result (or exception) arrives in the returned future.

        Raises:
            HashingBusy: the threads have been closed (the service is stopping).
        """
        if self._closed:
            raise _stopping()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes] = loop.create_future()
        self._jobs.put((loop, future, job))
        return future

    def close(self) -> None:
        """Let each thread finish its current job and stop; queued jobs fail with
        ``HashingBusy`` (a 503 with Retry-After: another replica or a retry will answer)."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(queue.Empty):
            while (item := self._jobs.get_nowait()) is not None:
                loop, future, _ = item
                _settle(loop, future, _stopping())
        for _ in self._threads:
            self._jobs.put(None)

    def _serve(self) -> None:
        while (item := self._jobs.get()) is not None:
            loop, future, job = item
            if future.cancelled():
                continue  # the caller has gone (its request was cancelled): skip the work
            try:
                result = job()
            except BaseException as exc:  # handed to the caller, who raises it
                _settle(loop, future, exc)
            else:
                _settle(loop, future, result)


def _stopping() -> HashingBusy:
    return HashingBusy("the service is stopping; retry shortly")


def _settle(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[bytes], outcome: bytes | BaseException
) -> None:
    with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting
        loop.call_soon_threadsafe(_resolve, future, outcome)


def _resolve(future: asyncio.Future[bytes], outcome: bytes | BaseException) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


# The "pepper id" of a test number's fixed code: its hash is the configured PHC string.
FIXED_CODE_ID = "fixed"


def fixed_code_hash(phc: str) -> CodeHash:
    """What a test number's challenge keeps when its code is given as a PHC string."""
    return CodeHash(pepper_id=FIXED_CODE_ID, params="phc", digest=phc.encode())


def _verifies(phc: str, code: str) -> bytes:
    try:
        return b"1" if PasswordHasher().verify(phc, code) else b"0"
    except (VerificationError, InvalidHashError):
        return b"0"


SALT_BYTES = 16
DIGEST_BYTES = 32
# Parameters read back from Redis are trusted only up to these (or the configured ones, if
# higher): a forged record must not make one check allocate gigabytes.
MAX_MEMORY_KIB = 262144
MAX_TIME_COST = 16
MAX_PARALLELISM = 8


class CodeHasher:
    """Hashes and checks codes with keyed argon2id, off the event loop, with bounded concurrency."""

    def __init__(
        self,
        settings: HashingSettings,
        current: Pepper,
        previous: Pepper | None = None,
        *,
        threads: int | None = None,
    ) -> None:
        """``threads`` defaults to the settings' cap (a process serving alone)."""
        threads = threads or settings.concurrency
        self._params = (settings.memory_kib, settings.time_cost, settings.parallelism)
        self._limits = (
            max(settings.memory_kib, MAX_MEMORY_KIB),
            max(settings.time_cost, MAX_TIME_COST),
            max(settings.parallelism, MAX_PARALLELISM),
        )
        self._current = current
        self._peppers = {p.id: p for p in (current, previous) if p is not None}
        # One thread per hash allowed at once: their queue holds the admitted rest.
        self._threads = HashingThreads(threads, "argon2")
        self._max_admitted = threads + settings.max_waiting
        self._admitted = 0
        # Counted so tests and metrics can see how many argon2 evaluations really ran.
        self.evaluations = 0

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        """Admit one request that will hash, or refuse it at once when too many are queued.

        Taken before anything is spent (an attempt, a send), so a refusal costs nothing.

        Raises:
            HashingBusy: the queue is full; retry shortly.
        """
        if self._admitted >= self._max_admitted:
            raise HashingBusy("too many codes are being checked; retry shortly")
        self._admitted += 1
        try:
            yield
        finally:
            self._admitted -= 1

    async def hash_code(self, challenge_id: str, code: str) -> CodeHash:
        """The keyed hash to store for the code of ``challenge_id``."""
        params, digest = await self.hash_keyed(self._current.mac(challenge_id, code))
        return CodeHash(pepper_id=self._current.id, params=params, digest=digest)

    async def check_code(self, challenge_id: str, code: str, stored: CodeHash) -> bool:
        """True when ``code`` matches ``stored``; compared in constant time."""
        if stored.pepper_id == FIXED_CODE_ID:
            return await self._check_phc(code, stored.digest)
        pepper = self._peppers.get(stored.pepper_id)
        if pepper is None:
            # A rotated-out pepper: the code cannot be checked. Spend the same time as a check.
            await self.waste_time()
            return False
        return await self.check_keyed(pepper.mac(challenge_id, code), stored.params, stored.digest)

    async def hash_keyed(self, mac: bytes) -> tuple[str, bytes]:
        """argon2id over ``mac`` (an HMAC the caller keyed) with a fresh salt: the parameters
        as stored ("memory,time,lanes") and the salt followed by the digest."""
        salt = secrets.token_bytes(SALT_BYTES)
        digest = await self._argon2(mac, salt, self._params)
        return ",".join(str(p) for p in self._params), salt + digest

    async def check_keyed(self, mac: bytes, params: str, stored: bytes) -> bool:
        """True when ``mac`` hashes to ``stored`` (from ``hash_keyed``); constant time. A damaged
        record spends the time of a check and answers False."""
        checked = self._stored_params(params)
        if checked is None or len(stored) != SALT_BYTES + DIGEST_BYTES:
            await self.waste_time()
            return False
        actual = await self._argon2(mac, stored[:SALT_BYTES], checked)
        return hmac.compare_digest(actual, stored[SALT_BYTES:])

    async def _check_phc(self, code: str, phc: bytes) -> bool:
        """A test number's fixed code against its argon2id PHC string (from the config, kept
        with the challenge), within the same bounds as any stored parameters."""
        try:
            found = extract_parameters(phc.decode())
        except (InvalidHashError, UnicodeDecodeError):
            found = None
        bounded = found is not None and self._stored_params(
            f"{found.memory_cost},{found.time_cost},{found.parallelism}"
        )
        if found is None or not bounded or found.type is not Type.ID:
            await self.waste_time()
            return False
        self.evaluations += 1
        verified = await self._threads.run(functools.partial(_verifies, phc.decode(), code))
        return verified == b"1"

    async def waste_time(self) -> None:
        """Run one throw-away hash, so a refusal takes as long as a real check."""
        await self._argon2(b"", secrets.token_bytes(SALT_BYTES), self._params)

    def close(self) -> None:
        """Stop the hashing threads."""
        self._threads.close()

    def _stored_params(self, params: str) -> tuple[int, int, int] | None:
        """Parameters read back from the store, or None when malformed or beyond the bounds."""
        try:
            memory_kib, time_cost, parallelism = (int(p) for p in params.split(","))
        except ValueError:
            return None
        values = (memory_kib, time_cost, parallelism)
        if all(1 <= value <= limit for value, limit in zip(values, self._limits, strict=True)):
            return values
        return None

    async def _argon2(self, secret: bytes, salt: bytes, params: tuple[int, int, int]) -> bytes:
        memory_kib, time_cost, parallelism = params
        self.evaluations += 1
        return await self._threads.run(
            functools.partial(
                hash_secret_raw,
                secret,
                salt,
                time_cost=time_cost,
                memory_cost=memory_kib,
                parallelism=parallelism,
                hash_len=DIGEST_BYTES,
                type=Type.ID,
            ),
        )
