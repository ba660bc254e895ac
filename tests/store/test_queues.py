"""Sharded queues: entries spread over the shards' slots, every one read exactly once, and the
previous release's unsharded stream drained without ever being made again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import pytest
from redis.asyncio.cluster import RedisCluster

from otpservice.app import create_app
from otpservice.config.schema import Settings
from otpservice.store import StoreClient, connect
from otpservice.store.keys import KeySpace
from otpservice.store.queues import GROUP, QueueItem, QueueRead, QueueStore, read_together
from otpservice.workers.queue_worker import QueueWorker, run_together
from tests.support.app import Phone, cluster_client, running
from tests.support.servers.redis import RedisClusterServers, RedisServer

# Shares the Redis Cluster of the other cluster modules: one worker starts it.
pytestmark = pytest.mark.xdist_group("processes")

SHARDS = 4


class Job(msgspec.Struct, frozen=True):
    number: int


Queues = Callable[[str], QueueStore[Job]]


@pytest.fixture(params=["single", "cluster"])
async def store(
    request: pytest.FixtureRequest, make_settings: Callable[..., Settings], phone: Phone
) -> AsyncIterator[tuple[Queues, StoreClient, KeySpace]]:
    """Queues of test jobs on the service's own store commands, on one node, then a cluster."""
    if request.param == "single":
        server: RedisServer = request.getfixturevalue("redis_server")
        settings = make_settings(server.url)
        client = connect(settings)
        await client.flushall()
    else:
        cluster: RedisClusterServers = request.getfixturevalue("redis_cluster_servers")
        await (await cluster_client(cluster)).aclose()
        settings = make_settings(cluster.url, redis={"url": cluster.url, "cluster": True})
        client = connect(settings)
    app = create_app(settings, redis=client, sms=phone.sender)
    async with running(app):
        runtime = app.state.runtime
        keys = runtime.keys

        def queue(name: str) -> QueueStore[Job]:
            return QueueStore(runtime.stores.commands, keys, name, Job, shards=SHARDS)

        yield queue, client, keys
    await client.aclose()


async def read_all(queue: QueueStore[Job], consumer: str = "w") -> list[int]:
    """Read and finish until a pass finds nothing; the job numbers, in the order read."""
    numbers: list[int] = []
    while items := await queue.read(consumer, 10):
        for item in items:
            assert item.entry is not None
            numbers.append(item.entry.number)
            await queue.finish(item)
    return numbers


async def test_entries_spread_over_the_shards_and_each_is_read_exactly_once(
    store: tuple[Queues, StoreClient, KeySpace],
) -> None:
    make, client, keys = store
    name = f"spread{time.monotonic_ns()}"
    queue = make(name)
    for number in range(200):
        await queue.add(Job(number))
    streams = [keys.queue(name, shard)[0] for shard in range(SHARDS)]
    added = [(await client.xinfo_stream(stream))["entries-added"] for stream in streams]
    assert sum(added) == 200
    assert min(added) >= 20  # random shards: each gets about 50
    if isinstance(client, RedisCluster):
        masters = {client.get_node_from_key(stream).name for stream in streams}  # type: ignore[union-attr]
        assert len(masters) >= 2  # spread over the cluster, not all on one master
    assert sorted(await read_all(queue)) == list(range(200))
    assert await queue.backlog() == (0, 0)


async def test_reads_go_round_the_shards_so_none_waits_behind_the_others(
    store: tuple[Queues, StoreClient, KeySpace],
) -> None:
    make, _, _ = store
    name = f"fair{time.monotonic_ns()}"
    queue = make(name)
    for number in range(400):
        await queue.add(Job(number))
    # Four reads of 4 take about one entry from each shard each time, not 4 from one.
    shards_read = set()
    for _ in range(4):
        items = await queue.read("w", 4)
        assert 4 <= len(items) < 4 + SHARDS
        shards_read |= {item.shard for item in items}
    assert shards_read == set(range(SHARDS))


async def test_the_previous_releases_stream_is_drained_and_never_made_again(
    store: tuple[Queues, StoreClient, KeySpace],
) -> None:
    make, client, keys = store
    name = f"legacy{time.monotonic_ns()}"
    old_stream, old_delayed = keys.queue(name, None)
    # What an old pod left: a waiting entry (its group made as it made it) and a retry due now.
    await client.xgroup_create(old_stream, GROUP, id="0", mkstream=True)
    await client.xadd(old_stream, {"e": msgspec.msgpack.encode(Job(1))})
    await client.zadd(old_delayed, {msgspec.msgpack.encode(Job(2)): 0})
    queue = make(name)
    await queue.add(Job(3))
    assert await queue.release_due(limit=10) == 1
    assert sorted(await read_all(queue)) == [1, 2, 3]
    assert await client.xlen(old_stream) == 0  # finished where it was
    # A queue with no old stream reads on, and never makes one.
    fresh = make(f"fresh{time.monotonic_ns()}")
    await fresh.add(Job(4))
    assert await read_all(fresh) == [4]
    fresh_old, _ = keys.queue(fresh._name, None)
    assert not await client.exists(fresh_old)


async def test_an_entry_taken_by_a_worker_that_died_is_taken_over_on_its_shard(
    store: tuple[Queues, StoreClient, KeySpace],
) -> None:
    make, _, _ = store
    queue = make(f"claim{time.monotonic_ns()}")
    for number in range(8):
        await queue.add(Job(number))
    taken = []
    while items := await queue.read("died", 8):  # about 8 a read: the rest next time
        taken += items
    assert len(taken) == 8
    assert await queue.read("survivor", 8) == []  # nothing new
    reclaimed: dict[tuple[int, str], QueueItem[Job]] = {}
    for _ in range(10):  # about 8 a call, and idle_ms 0 takes each again: until all are seen
        reclaimed |= {item.ref: item for item in await queue.reclaim("survivor", 0, count=8)}
        if len(reclaimed) == 8:
            break
    items = list(reclaimed.values())
    assert sorted(item.entry.number for item in items if item.entry) == list(range(8))
    assert all(item.reclaimed for item in items)
    assert not await queue.touch("died", items[0])  # no longer the dead one's
    for item in items:
        await queue.finish(item)
    assert await queue.backlog() == (0, 0)


def count_pipelines(queue: QueueStore[Job], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the node of every pipeline sent from now on with a command for ``queue``."""
    commands = queue._commands
    sent: list[str] = []
    pipeline = commands.pipeline

    async def counted(key: str, batch: Any) -> list[Any]:
        if any(queue._name in str(command) for command in batch):  # not the app's own loop
            sent.append(commands.node_of(key))
        return await pipeline(key, batch)

    monkeypatch.setattr(commands, "pipeline", counted)
    return sent


async def test_several_queues_are_read_in_one_pipeline_per_master(
    store: tuple[Queues, StoreClient, KeySpace], monkeypatch: pytest.MonkeyPatch
) -> None:
    make, client, _ = store
    stamp = time.monotonic_ns()
    queues = [make(f"together{stamp}-{i}") for i in range(3)]
    for i, queue in enumerate(queues):
        for number in range(5):
            await queue.add(Job(100 * i + number))
    first = await read_together([QueueRead(q, "w", 1) for q in queues])  # makes the groups
    sent = count_pipelines(queues[0], monkeypatch)
    then = await read_together([QueueRead(q, "w", 20) for q in queues])
    masters = len(client.get_primaries()) if isinstance(client, RedisCluster) else 1
    # All three queues' shards, one pipeline per master (three queues alone would send three).
    assert len(sent) == len(set(sent)) <= masters
    for i in range(3):
        numbers = [item.entry.number for item in first[i] + then[i] if item.entry]
        assert sorted(numbers) == [100 * i + n for n in range(5)]  # its own, each once


class Collecting(QueueWorker[Job]):
    """Finishes each job and notes its number; ``finished`` is set after ``expected`` jobs."""

    def __init__(self, queue: QueueStore[Job], expected: int) -> None:
        super().__init__(queue, concurrency=2, claim_idle_ms=60_000, consumer="c")
        self.done: list[int] = []
        self.expected = expected
        self.finished = asyncio.Event()

    async def handle(self, item: QueueItem[Job]) -> None:
        assert item.entry is not None
        await asyncio.sleep(0.01)  # a send takes a while: the slots fill up
        self.done.append(item.entry.number)
        await self._queue.finish(item)
        if len(self.done) >= self.expected:
            self.finished.set()


async def test_workers_of_one_loop_each_handle_their_own_queue_and_idle_as_one(
    store: tuple[Queues, StoreClient, KeySpace], monkeypatch: pytest.MonkeyPatch
) -> None:
    make, client, _ = store
    stamp = time.monotonic_ns()
    outbox, events = make(f"loop-outbox{stamp}"), make(f"loop-events{stamp}")
    workers = [Collecting(outbox, expected=12), Collecting(events, expected=1)]
    for number in range(12):  # more than a worker's slots: freed slots are filled again
        await outbox.add(Job(number))
    await events.add(Job(99))
    stop = asyncio.Event()
    loop = asyncio.create_task(run_together(workers, stop))
    async with asyncio.timeout(10):
        await asyncio.gather(*(worker.finished.wait() for worker in workers))
    assert sorted(workers[0].done) == list(range(12))
    assert workers[1].done == [99]
    # Idle now: each pass reads both queues in one pipeline per master.
    sent = count_pipelines(outbox, monkeypatch)
    await asyncio.sleep(0.5)
    stop.set()
    await loop
    masters = len(client.get_primaries()) if isinstance(client, RedisCluster) else 1
    passes = 0.5 / 0.05  # at most one pass per idle back-off, plus housekeeping's reclaims
    assert 0 < len(sent) <= masters * (passes + 1) * 1.5
    # Two loops of their own would have sent about twice as many.
    assert len(sent) < 2 * masters * passes


async def test_a_broken_queue_holds_up_none_of_the_others_in_its_loop(
    store: tuple[Queues, StoreClient, KeySpace],
) -> None:
    # A queue whose streams are not streams (a hand-made key, a bug) answers WRONGTYPE: its
    # shards are skipped and logged, and the queues read in the same pipeline still deliver.
    make, client, _ = store
    stamp = time.monotonic_ns()
    broken, outbox, events = (make(f"broken{name}{stamp}") for name in ("-x", "-outbox", "-events"))
    for shard in broken._shards:
        await client.set(shard.stream, "not a stream")
    workers = [Collecting(broken, 1), Collecting(outbox, 6), Collecting(events, 1)]
    for number in range(6):
        await outbox.add(Job(number))
    await events.add(Job(99))
    stop = asyncio.Event()
    loop = asyncio.create_task(run_together(workers, stop))
    try:
        async with asyncio.timeout(10):
            await asyncio.gather(workers[1].finished.wait(), workers[2].finished.wait())
    finally:
        stop.set()
        await loop
    assert (sorted(workers[1].done), workers[2].done, workers[0].done) == (list(range(6)), [99], [])
