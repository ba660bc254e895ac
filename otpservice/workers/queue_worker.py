"""QueueWorker: the loop shared by the workers of the durable queues (SMS delivery, keyword
replies, app events).

The workers of a process run in one loop (``run_together``). Each pass reads new entries from
every shard of every queue with room for more, without blocking, in one pipeline per master for
all of them, and hands each entry to its worker in a task of its own, about ``concurrency`` at
once per worker; a pass that found none waits ``IDLE_BACKOFF_SECONDS`` (less if a full worker
frees a slot meanwhile). An idle process thus sends one pipeline per master every 50 ms, not one
per queue. Every ``HOUSEKEEPING_SECONDS`` a pass also releases retries that are due and takes
over entries another worker left idle too long (it died). A failed pass is logged and retried: a
worker that stops is worse than one that complains.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import os
import random
import socket
import time
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import msgspec

from otpservice.errors import Unavailable
from otpservice.metrics import QUEUE_AGE, QUEUE_DEPTH
from otpservice.store.queues import QueueRead, read_together

if TYPE_CHECKING:
    from collections.abc import Sequence

    from otpservice.store.queues import QueueItem, QueueStore

log = logging.getLogger("otpservice.queue_worker")  # a log field: kept as named before the move

E = TypeVar("E", bound=msgspec.Struct)

# How long a worker waits before reading again when a pass found nothing: the most a new entry
# waits for an idle worker, besides the read itself (bench/pickup.py measures it).
IDLE_BACKOFF_SECONDS = 0.05
# How often a worker moves due retries back and takes over entries left idle too long.
HOUSEKEEPING_SECONDS = 0.25
# A worker that read a shard this recently counts toward the fleet's size.
FLEET_WITHIN_MS = 10_000
# How often a worker sets its queue's depth and age gauges.
GAUGE_SECONDS = 5.0


def retry_delay(attempt: int, base: float, maximum: float, at_least: float | None = None) -> float:
    """Seconds before retry number ``attempt + 1``: exponential backoff with full jitter (so
    workers that failed together do not retry together), and never under ``at_least`` (a
    provider's Retry-After)."""
    backoff = min(maximum, base * 2**attempt)
    return max(random.uniform(0, backoff), at_least or 0.0)  # noqa: S311


def consumer_name() -> str:
    """A name for this process's worker in a consumer group: host, pid and a random part."""
    return f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"


class QueueWorker(abc.ABC, Generic[E]):
    """Reads a queue and hands each entry to ``handle``, several at once."""

    # Names the queue in logs.
    queue_name = "queue"

    def __init__(
        self, queue: QueueStore[E], *, concurrency: int, claim_idle_ms: int, consumer: str | None
    ) -> None:
        self._queue = queue
        self._concurrency = concurrency
        self._claim_idle_ms = claim_idle_ms
        self.consumer = consumer or consumer_name()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._handling: set[tuple[int, str]] = set()  # the entries in hand (QueueItem.ref)
        # Workers of this queue in the whole fleet lately (this one included), as last counted.
        self.fleet_size = 1
        # Set when the worker is asked to stop: waits in ``handle`` should give up then.
        self.stopping = asyncio.Event()
        # Set when a task ends while every slot was taken: the loop reads again at once.
        self.slot_freed = asyncio.Event()

    @abc.abstractmethod
    async def handle(self, item: QueueItem[E]) -> None:
        """Handle one entry; finish it or schedule a retry. ``Unavailable`` leaves it pending."""

    async def run(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set; then let the entries in hand finish."""
        await run_together([self], stop)

    async def run_once(self, *, housekeeping: bool = True) -> int:
        """One pass (with ``housekeeping``: due retries and takeovers too); returns how many
        entries were started (none when every slot is busy)."""
        return await run_pass([self], housekeeping=housekeeping)

    @property
    def free_slots(self) -> int:
        """How many more entries this worker would take now."""
        return self._concurrency - len(self._in_flight)

    async def _housekeep(self) -> list[QueueItem[E]]:
        """Move due retries back, and take over entries left idle too long (up to the free
        slots, none when full); those taken over."""
        await self._queue.release_due(limit=100)
        if self.free_slots <= 0:
            return []
        items = await self._queue.reclaim(self.consumer, self._claim_idle_ms, self.free_slots)
        # An entry this worker is still handling (a slow send) looks idle to XAUTOCLAIM too.
        return [item for item in items if item.ref not in self._handling]

    def _start(self, items: list[QueueItem[E]]) -> None:
        for item in items:
            self._handling.add(item.ref)
            task = asyncio.create_task(self._handle(item))
            self._in_flight.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        full = self.free_slots <= 0
        self._in_flight.discard(task)
        if full:
            self.slot_freed.set()

    async def _report_backlog(self) -> None:
        """Set the queue's depth and oldest-entry age gauges, and ``fleet_size``."""
        self.fleet_size = max(1, await self._queue.active_consumers(FLEET_WITHIN_MS))
        waiting, delayed = await self._queue.backlog()
        age_ms = await self._queue.oldest_age_ms(int(time.time() * 1000))
        QUEUE_DEPTH.labels(queue=self.queue_name).set(waiting + delayed)
        QUEUE_AGE.labels(queue=self.queue_name).set(age_ms / 1000)

    async def drain(self) -> None:
        """Wait for the entries in hand."""
        while self._in_flight:
            await asyncio.wait(list(self._in_flight))

    async def _handle(self, item: QueueItem[E]) -> None:
        heartbeat = asyncio.create_task(self._keep_claimed(item))
        try:
            await self.handle(item)
        except Unavailable:
            # Left pending: taken over after the claim idle time, by this or another worker.
            log.warning("%s: store unavailable while handling %s", self.queue_name, item.stream_id)
        except Exception:
            log.exception("%s: handling %s failed unexpectedly", self.queue_name, item.stream_id)
        finally:
            heartbeat.cancel()
            self._handling.discard(item.ref)

    async def _keep_claimed(self, item: QueueItem[E]) -> None:
        """While an entry is in hand (a slow send, a rate-limit wait), keep it from looking
        idle, so no other worker takes it over and handles it a second time."""
        with contextlib.suppress(Unavailable):
            while True:
                await asyncio.sleep(self._claim_idle_ms / 3000)
                if not await self._queue.touch(self.consumer, item):
                    return


async def run_pass(workers: Sequence[QueueWorker[Any]], *, housekeeping: bool) -> int:
    """One pass of ``workers`` (the queues of one store): housekeeping if due (for every
    worker, so a full one's due retries still move back), then one read of the queues of those
    with free slots; how many entries were started. One queue's failure holds up no other, and
    what was taken is started even when a later step fails.

    Raises:
        Unavailable: the read could reach no shard.
    """
    taken: dict[QueueWorker[Any], list[QueueItem[Any]]] = {worker: [] for worker in workers}
    try:
        if housekeeping:
            for worker in workers:
                try:
                    taken[worker] += await worker._housekeep()
                except Unavailable as exc:
                    log.warning("%s: housekeeping skipped: %s", worker.queue_name, exc)
                except Exception:
                    log.exception("%s: housekeeping failed; the others go on", worker.queue_name)
        reading = [worker for worker in workers if worker.free_slots > len(taken[worker])]
        reads = [
            QueueRead(worker._queue, worker.consumer, worker.free_slots - len(taken[worker]))
            for worker in reading
        ]
        if reads:
            for worker, items in zip(reading, await read_together(reads), strict=True):
                taken[worker] += items
    finally:
        for worker, items in taken.items():
            worker._start(items)
    return sum(len(items) for items in taken.values())


async def run_together(workers: Sequence[QueueWorker[Any]], stop: asyncio.Event) -> None:
    """Work the queues of ``workers`` (of one store) in one loop until ``stop`` is set; then
    let the entries in hand finish."""
    # One event for all: a full worker's finished task ends the loop's idle wait.
    wake = asyncio.Event()
    for worker in workers:
        worker.stopping, worker.slot_freed = stop, wake
    reported = housekept = 0.0
    names = "/".join(worker.queue_name for worker in workers)
    while not stop.is_set():
        if all(worker.free_slots <= 0 for worker in workers):
            busy = set().union(*(worker._in_flight for worker in workers))
            await asyncio.wait(busy, return_when=asyncio.FIRST_COMPLETED)
            continue
        wake.clear()
        try:
            housekeeping = time.monotonic() - housekept >= HOUSEKEEPING_SECONDS
            if housekeeping:
                housekept = time.monotonic()
            started = await run_pass(workers, housekeeping=housekeeping)
            if time.monotonic() - reported >= GAUGE_SECONDS:
                reported = time.monotonic()
                for worker in workers:
                    await worker._report_backlog()
        except Unavailable as exc:
            log.warning(
                "%s: the store is unavailable (%s); retrying shortly", names, exc.__cause__ or exc
            )
        except Exception:
            log.exception("%s: a pass failed; retrying shortly", names)
        else:
            if not started:
                # ``stop`` is looked at once a pass: at most this long after it is set.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), IDLE_BACKOFF_SECONDS)
            continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
    for worker in workers:
        await worker.drain()
