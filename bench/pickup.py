"""Queue pick-up latency: how long an entry waits for an idle worker on the sharded queues.

    uv run python -m bench.pickup                     # 200 entries, 4 shards, then 1 and 16
    uv run python -m bench.pickup --entries 300 --shards 4

Starts its own ``redis-server`` and, in this process, the service's own ``QueueStore`` and
``QueueWorker`` loop (the one the outbox, events and replies run). A producer adds an entry
every 20 to 200 ms (random), so the worker is idle between them, and the figure is the time from
``add`` returning to the worker's ``handle`` starting: p50, p99 and the most, per shard count.
The issue's target is a p99 of at most 100 ms. It also prints the commands the idle worker sent
per second (Redis's ``INFO commandstats``), the price of polling. Prints figures only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import statistics
import tempfile
import time
from pathlib import Path

import msgspec
from redis.asyncio import Redis

from bench.harness import RedisProcess
from otpservice.config.schema import RedisSettings
from otpservice.store.keys import KeySpace
from otpservice.store.queues import QueueItem, QueueStore
from otpservice.store.scripts import StoreCommands
from otpservice.workers.queue_worker import QueueWorker


class Stamped(msgspec.Struct, frozen=True):
    """An entry: its number names it in the producer's and the worker's records."""

    number: int


class Timing(QueueWorker[Stamped]):
    """Records when each entry's handling started, and finishes it."""

    queue_name = "bench"

    def __init__(self, queue: QueueStore[Stamped], expected: int) -> None:
        super().__init__(queue, concurrency=8, claim_idle_ms=30_000, consumer="bench")
        self.started: dict[int, float] = {}
        self._expected = expected
        self.all_started = asyncio.Event()

    async def handle(self, item: QueueItem[Stamped]) -> None:
        assert item.entry is not None
        self.started[item.entry.number] = time.monotonic()
        if len(self.started) == self._expected:
            self.all_started.set()
        await self._queue.finish(item)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def measure(redis_url: str, shards: int, entries: int) -> str:
    settings = RedisSettings(url=redis_url)
    client = Redis.from_url(redis_url)
    commands = StoreCommands(client, settings)
    queue = QueueStore(
        commands, KeySpace("bench", "bench-index-key"), f"q{shards}", Stamped, shards=shards
    )
    worker = Timing(queue, entries)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    added: dict[int, float] = {}
    await asyncio.sleep(0.5)  # the worker is up and idle
    await client.config_resetstat()
    idle_started = time.monotonic()
    await asyncio.sleep(2.0)
    idle_commands = sum(
        int(stats["calls"]) for stats in (await client.info("commandstats")).values()
    )
    idle_rate = idle_commands / (time.monotonic() - idle_started)
    for number in range(entries):
        await asyncio.sleep(random.uniform(0.02, 0.2))
        await queue.add(Stamped(number))
        added[number] = time.monotonic()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(worker.all_started.wait(), 5)
    stop.set()
    await running
    await commands.close()
    await client.aclose()
    waits = [(worker.started[n] - added[n]) * 1000 for n in added if n in worker.started]
    lost = entries - len(waits)
    return (
        f"shards {shards:>2}: pick-up p50 {statistics.median(waits):5.1f} ms, "
        f"p99 {percentile(waits, 0.99):5.1f} ms, max {max(waits):5.1f} ms "
        f"({len(waits)} entries{f', {lost} not picked up in 5 s' if lost else ''}); "
        f"idle worker: {idle_rate:,.0f} Redis commands/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=200)
    parser.add_argument("--shards", default="4,1,16", help="shard counts, comma-separated")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="otp-bench-pickup-") as workdir:
        redis = RedisProcess(Path(workdir))
        try:
            for shards in (int(s) for s in options.shards.split(",")):
                print(asyncio.run(measure(redis.url, shards, options.entries)), flush=True)
        finally:
            redis.close()


if __name__ == "__main__":
    main()
