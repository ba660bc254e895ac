"""The outbox and its workers: sealing, takeover after a crash, Redis restarts, ended challenges.

Workers are driven by hand here (``outbox.workers_in_process = false``, then ``run_once``), so
each step happens exactly when the test says.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterator

import pytest
from redis.asyncio import Redis

from otpservice.config.schema import Settings
from otpservice.errors import StoreUnavailable
from otpservice.models import ChallengeRequest, DeliveryReport, DeliveryStatus
from otpservice.runtime import Runtime
from otpservice.store import connect
from otpservice.store.rates import SendSlot
from otpservice.workers.delivery import DeliveryWorker
from tests.support.delivery import (
    MANUAL,
    StartApi,
    StartApp,
    acs_entry,
    code_in,
    deliver,
    delivery,
    gateway_entry,
    issue,
    queue_keys,
    queued,
    twilio_entry,
    verify,
)
from tests.support.helpers import PHONE, wait_until
from tests.support.servers.providers import FakeAcs, FakeGateway, FakeTwilio, Planned
from tests.support.servers.redis import RedisServer


async def test_the_outbox_holds_neither_code_nor_number_and_forgets_what_is_done(
    start_app: StartApp, acs: FakeAcs, redis: Redis
) -> None:
    api, app = await start_app(acs_entry(acs), outbox=MANUAL)
    runtime: Runtime = app.state.runtime
    challenge_id = await issue(api)
    [(_, fields)] = await queued(redis, "outbox")
    stored = repr(fields)
    assert (await delivery(api, challenge_id))["status"] == "queued"
    assert await deliver(runtime) == 1
    code = code_in(acs)
    for secret in (code, PHONE, PHONE[2:], "is your"):
        assert secret not in stored
    assert await runtime.stores.outbox.backlog() == (0, 0)  # finished entries are deleted
    assert await queued(redis, "outbox") == []
    assert (await verify(api, challenge_id, code)).status_code == 200


@pytest.mark.parametrize("how", ["replaced", "cancelled"])
async def test_a_message_whose_challenge_ended_before_it_went_out_is_not_sent(
    start_app: StartApp, acs: FakeAcs, how: str
) -> None:
    api, app = await start_app(
        acs_entry(acs), outbox=MANUAL, send_limits={"min_interval_seconds": 0}
    )
    first = await issue(api)
    if how == "replaced":
        second = await issue(api)
    else:
        await api.delete(f"/challenge/{first}")
    await deliver(app.state.runtime)
    if how == "replaced":
        assert [m.fields["smsSendOptions"]["tag"] for m in acs.delivered] == [second]
    else:
        assert acs.delivered == []
    assert (await delivery(api, first))["status"] == "queued"  # never sent
    assert await app.state.runtime.stores.outbox.backlog() == (0, 0)


async def test_a_message_past_its_codes_expiry_is_failed_not_sent(
    start_app: StartApp, acs: FakeAcs
) -> None:
    api, app = await start_app(acs_entry(acs), outbox=MANUAL, code={"ttl_seconds": 3})
    challenge_id = await issue(api)
    await asyncio.sleep(3.1)
    await deliver(app.state.runtime)
    assert acs.received == []
    state = await delivery(api, challenge_id)  # the expired challenge's tombstone says so
    assert (state["status"], state["detail"]) == ("failed", "expired before sending")
    assert await app.state.runtime.stores.outbox.backlog() == (0, 0)


def second_worker(runtime: Runtime, name: str) -> DeliveryWorker:
    """Another worker on the same outbox (as in another process)."""
    return runtime.delivery_worker(consumer=name)


async def test_a_message_taken_by_a_worker_that_died_before_sending_is_sent_by_another(
    start_app: StartApp, twilio: FakeTwilio
) -> None:
    api, app = await start_app(twilio_entry(twilio), outbox=MANUAL)
    runtime: Runtime = app.state.runtime
    challenge_id = await issue(api)
    taken = await runtime.stores.outbox.read("worker-that-died", 10)
    assert len(taken) == 1
    survivor = second_worker(runtime, "survivor")
    assert await deliver(runtime, survivor) == 0  # not idle long enough yet
    await asyncio.sleep(1.1)
    assert await deliver(runtime, survivor) == 1
    assert [m.to for m in twilio.delivered] == [PHONE]
    assert (await delivery(api, challenge_id))["status"] == "sent"


@pytest.mark.parametrize(("provider", "resent"), [("twilio", False), ("acs", True)])
async def test_a_message_a_dead_worker_was_sending_is_repeated_only_where_repeats_are_dropped(
    start_app: StartApp, twilio: FakeTwilio, acs: FakeAcs, provider: str, resent: bool
) -> None:
    # Twilio first, ACS second: the survivor must not fail over to the other provider either.
    entries = [twilio_entry(twilio), acs_entry(acs)]
    if provider == "acs":
        entries.reverse()
    api, app = await start_app(*entries, outbox=MANUAL)
    runtime: Runtime = app.state.runtime
    challenge_id = await issue(api)
    [item] = await runtime.stores.outbox.read("worker-that-died", 10)
    # The dead worker had recorded its attempt, and may or may not have reached the provider.
    keys = runtime.services.otp._keys.for_challenge(challenge_id)
    assert keys is not None
    assert item.entry is not None
    await runtime.stores.challenges.record_delivery(
        keys,
        DeliveryStatus.SENDING,
        send_id=item.entry.send_id,
        report=DeliveryReport(provider=provider),
    )
    await asyncio.sleep(1.1)
    await deliver(runtime, second_worker(runtime, "survivor"))
    state = await delivery(api, challenge_id)
    others = acs if provider == "twilio" else twilio
    assert others.received == []
    if resent:
        assert (state["status"], state["provider"]) == ("sent", "acs")
        assert len(acs.delivered) == 1
    else:
        assert (state["status"], state["provider"]) == ("unknown", "twilio")
        assert twilio.received == []
    assert await runtime.stores.outbox.backlog() == (0, 0)


@pytest.fixture
def aof_redis() -> Iterator[RedisServer]:
    server = RedisServer("--appendonly", "yes", "--appendfsync", "always")
    yield server
    server.close()


async def test_nothing_accepted_is_lost_when_redis_restarts(
    aof_redis: RedisServer, acs: FakeAcs, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(
        aof_redis.url, sms={"providers": [acs_entry(acs)]}, outbox={"workers_in_process": False}
    )
    client = connect(settings)
    runtime = Runtime(settings, client)
    await runtime.start()
    try:
        ids = []
        for n in range(3):
            issued, _ = await runtime.services.otp.issue_challenge(
                ChallengeRequest(phone=f"+1415555{7000 + n}"), client="default"
            )
            ids.append(issued.challenge_id)
        aof_redis.restart()  # the stream comes back from the append-only file
        deadline = time.monotonic() + 5
        while len(acs.delivered) < 3 and time.monotonic() < deadline:
            await deliver(runtime)
        assert sorted(m.fields["smsSendOptions"]["tag"] for m in acs.delivered) == sorted(ids)
    finally:
        await runtime.stop()
        await client.aclose()


async def test_the_senders_rate_limit_holds_across_workers(
    start_app: StartApp, twilio: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    api, app = await start_app(twilio_entry(twilio, messages_per_second=4), outbox=MANUAL)
    runtime: Runtime = app.state.runtime
    # The slots the pacing script granted, on the Redis clock: no Python clock can reach them.
    granted: list[int] = []
    take = runtime.stores.rates.take

    async def recording_take(provider: str, per_second: float, burst: int) -> SendSlot:
        slot = await take(provider, per_second, burst)
        if slot.granted:
            granted.append(slot.slot_ms)
        return slot

    monkeypatch.setattr(runtime.stores.rates, "take", recording_take)
    for n in range(8):
        await issue(api, f"+1415555{8000 + n}")
    # Two workers (as in two processes) share the limit through Redis.
    first, second = runtime.worker, second_worker(runtime, "second")
    while len(twilio.delivered) < 8:
        await asyncio.gather(deliver(runtime, first), deliver(runtime, second))
    assert len(twilio.delivered) == len(granted) == 8
    # 4 a second: each slot at least 250 ms after the one before, whichever worker took it.
    # Two workers that did not share the limit would take slots in pairs, 0 ms apart.
    assert min(b - a for a, b in itertools.pairwise(sorted(granted))) >= 250


async def test_a_new_worker_sends_what_an_old_release_queued_in_the_unsharded_outbox(
    start_app: StartApp, acs: FakeAcs, redis: Redis
) -> None:
    # A rolling deploy: an old pod queued this SMS in the previous release's layout, one
    # stream with the consumer group it made; a new pod's worker must send it.
    api, app = await start_app(acs_entry(acs), outbox=MANUAL)
    runtime: Runtime = app.state.runtime
    challenge_id = await issue(api)
    [(stream_id, fields)] = await queued(redis, "outbox")
    for key in queue_keys("outbox"):
        await redis.xdel(key, stream_id)
    await redis.xgroup_create("otp:{outbox}:stream", "workers", id="0", mkstream=True)
    await redis.xadd("otp:{outbox}:stream", fields)
    assert await deliver(runtime) == 1
    assert (await delivery(api, challenge_id))["status"] == "sent"
    assert (await verify(api, challenge_id, code_in(acs))).status_code == 200
    assert await redis.xlen("otp:{outbox}:stream") == 0  # finished where it was


async def test_with_the_rate_key_unreachable_each_process_sends_at_its_share_of_the_rate(
    start_app: StartApp, twilio: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    api, app = await start_app(twilio_entry(twilio, messages_per_second=4), outbox=MANUAL)
    runtime: Runtime = app.state.runtime
    other = second_worker(runtime, "other-process")
    for n, worker in enumerate((runtime.worker, other)):  # each sends one: both in the group
        await issue(api, f"+1415555{8300 + n}")
        assert await deliver(runtime, worker) == 1
    await runtime.worker._report_backlog()
    assert runtime.worker.fleet_size == 2  # counted from the outbox's consumer group

    async def unreachable(provider: str, per_second: float, burst: int) -> SendSlot:
        raise StoreUnavailable("the rate key's master is failing over")

    monkeypatch.setattr(runtime.stores.rates, "take", unreachable)
    for n in range(4):
        await issue(api, f"+1415555{8200 + n}")
    for _ in range(40):  # a few seconds at most
        await deliver(runtime)
        if len(twilio.delivered) == 6:
            break
    assert len(twilio.delivered) == 6
    # Delivery went on, at this process's half of 4 a second: 500 ms apart, not 250.
    arrivals = sorted(message.at for message in twilio.delivered[2:])
    assert min(b - a for a, b in itertools.pairwise(arrivals)) >= 0.45


async def test_a_worker_survives_its_stream_vanishing_and_keeps_delivering(
    start_api: StartApi, acs: FakeAcs, redis: Redis
) -> None:
    api = await start_api(acs_entry(acs))  # workers run in the app, as in production
    await delivery(api, await issue(api, "+14155557100"))
    # A flush or a failover to an empty replica, while the worker waits on the stream.
    await redis.delete(*queue_keys("outbox"))
    await asyncio.sleep(0.2)
    state = await delivery(api, await issue(api, "+14155557101"))
    assert state["status"] == "sent"
    assert len(acs.delivered) == 2


async def test_a_slow_send_is_taken_over_by_no_worker_while_its_worker_lives(
    start_app: StartApp, gateway: FakeGateway
) -> None:
    # The gateway answers after 2.5 s; a claim idle time of 1 s would make the message look
    # abandoned, but its worker keeps it claimed.
    gateway.plan = [Planned("late", delay=2.5)]
    api, app = await start_app(
        gateway_entry(gateway, timeout_seconds=5, deduplicates=True), outbox=MANUAL
    )
    runtime: Runtime = app.state.runtime
    challenge_id = await issue(api)
    sending = asyncio.create_task(deliver(runtime))  # the first worker, slow
    other = second_worker(runtime, "other")
    for _ in range(12):  # another worker looks for abandoned messages, and again
        await asyncio.sleep(0.25)
        await deliver(runtime, other)
        assert await runtime.worker.run_once() == 0  # nor does the first one take it twice
    await sending
    assert (await delivery(api, challenge_id))["status"] == "sent"
    assert len(gateway.received) == 1


async def test_a_stopping_worker_hands_back_what_waits_for_the_rate_limit(
    start_app: StartApp, twilio: FakeTwilio, redis: Redis
) -> None:
    api, app = await start_app(twilio_entry(twilio, messages_per_second=0.2), outbox=MANUAL)
    runtime: Runtime = app.state.runtime
    first, second = await issue(api, "+14155558100"), await issue(api, "+14155558101")
    stop = asyncio.Event()
    worker = asyncio.create_task(runtime.worker.run(stop))
    await wait_until(lambda: len(twilio.delivered) == 1)
    await asyncio.sleep(0.3)  # the second waits 5 s for the sender's next slot
    started = time.monotonic()
    stop.set()
    await worker
    assert time.monotonic() - started < 2  # it did not sit out the wait
    assert len(twilio.delivered) == 1
    # Handed back: waiting in the queue for a retry, by this or another worker.
    assert sum([await redis.zcard(key) for key in queue_keys("outbox", "delayed")]) == 1
    states = {
        cid: (await api.get(f"/challenge/{cid}")).json()["delivery"]["status"]
        for cid in (first, second)
    }
    assert sorted(states.values()) == ["retrying", "sent"]
