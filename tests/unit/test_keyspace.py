"""Every Redis key, stream and consumer-group name, as a snapshot: renaming one orphans the
data a running fleet has (challenges, opt-outs, queued SMS), so a change here must be a choice."""

from __future__ import annotations

from otpservice.store.keys import KeySpace
from otpservice.store.queues import GROUP

NUMBER = "+447700900123"
KEYS = KeySpace("otp", "index-key-for-the-snapshot-0123")
TAG = "Wf1i2R89-nl4WLPQ"


def test_per_number_keys_share_the_numbers_keyed_tag() -> None:
    assert KEYS.number_tag(NUMBER) == TAG
    assert KEYS.optout(NUMBER) == f"otp:{{{TAG}}}:optout"
    assert KEYS.optout_history(NUMBER) == f"otp:{{{TAG}}}:optout:log"
    assert KEYS.inbound_seen(NUMBER, "SM123") == f"otp:{{{TAG}}}:in:8dcedf76e8949e11196ca55b"
    assert KEYS.reply_guard(NUMBER, "opt_out") == f"otp:{{{TAG}}}:reply:opt_out"
    assert KEYS.number_pattern(NUMBER) == f"otp:{{{TAG}}}:*"
    assert KEYS.kept_on_erasure(NUMBER) == (
        f"otp:{{{TAG}}}:optout",
        f"otp:{{{TAG}}}:in:",
        f"otp:{{{TAG}}}:reply:",
    )


def test_a_challenges_keys_follow_from_its_id() -> None:
    keys = KEYS.for_challenge("AAAAAAAAAAAAAAAA.BBBBBBBBBBBBBBBBBBBBBB")
    assert keys is not None
    base = "otp:{AAAAAAAAAAAAAAAA}"
    assert (keys.challenge, keys.active, keys.sends, keys.guard, keys.inflight, keys.optout) == (
        f"{base}:c:BBBBBBBBBBBBBBBBBBBBBB",
        f"{base}:active",
        f"{base}:sends",
        f"{base}:guard",
        f"{base}:inflight",
        f"{base}:optout",
    )
    fresh = KEYS.new_challenge(NUMBER)
    assert fresh.challenge_id.startswith(f"{TAG}.")
    assert KEYS.for_challenge(fresh.challenge_id) == fresh


def test_shared_keys_streams_and_the_consumer_group() -> None:
    assert KEYS.optout_index() == "otp:{optouts}:index"
    assert KEYS.audit() == "otp:{audit}:stream"
    assert KEYS.event_feed() == "otp:{events}:feed"
    assert KEYS.idempotency("app", "key-1") == "otp:idem:{19313cd170157d1d1f587718f61bf366}"
    assert KEYS.queue("outbox", 0) == ("otp:{outbox:0}:stream", "otp:{outbox:0}:delayed")
    assert KEYS.queue("events", 3) == ("otp:{events:3}:stream", "otp:{events:3}:delayed")
    assert KEYS.queue("replies", 1) == ("otp:{replies:1}:stream", "otp:{replies:1}:delayed")
    # The previous release's layout, drained by new workers for one release.
    assert KEYS.queue("outbox", None) == ("otp:{outbox}:stream", "otp:{outbox}:delayed")
    assert KEYS.quota("per_ip", "203.0.113.7") == "otp:{q:per_ip:zwsR2ToI4pqpUOC_}"
    # A sharded rule's keys: the same name, a shard number inside the tag (its own slot).
    assert KEYS.quota("global", "all", 3) == "otp:{q:global:rAXSXQosysJUCm2H:3}"
    assert KEYS.fraud_counts("+44", 3) == "otp:{fg:+44:3}"
    # A prefix's source sets share its counts' slot (one script holds both).
    sources = KEYS.fraud_sources("+44", 3, "+4474")
    assert sources[0] == "otp:{fg:+44:3}:src:+4474:0"
    assert len(sources) == 12
    # A source is keyed: no address, no client name, in the key space.
    source = KEYS.fraud_source("login-app", "203.0.113.0/24")
    assert "203" not in source
    assert "login" not in source
    assert source != KEYS.fraud_source("other-app", "203.0.113.0/24")
    assert KEYS.fraud_tripped() == "otp:{fg}:trips"
    assert KEYS.stats(493000) == "otp:{stats:493000}"
    assert KEYS.send_rate("twilio") == "otp:rate:{twilio}"
    assert KEYS.readiness(2) == "otp:ready:{2}"
    assert KEYS.fingerprint(b"203.0.113.7") == (
        "94f56d243df48c6302e84cafa46030bf74fb8f580519e7fa6c6db6f4b9d132da"
    )
    assert GROUP == "workers"


def test_opaque_ids_share_nothing_yet_name_their_numbers_slot() -> None:
    opaque = KeySpace("otp", "k" * 32, opaque_ids=True)
    plain = KeySpace("otp", "k" * 32)
    number = "+447400123456"
    ids = [opaque.new_challenge(number) for _ in range(50)]
    # No two ids of one number begin alike (before: 16 characters, the same every time).
    assert len({keys.challenge_id[:4] for keys in ids}) > 40
    assert all(len(keys.challenge_id) == 45 for keys in ids)
    for keys in ids:
        found = opaque.for_challenge(keys.challenge_id)
        assert found == keys
        assert not found.forged
        assert found.challenge.startswith(f"otp:{{{opaque.number_tag(number)}}}:c:")
        # A service not issuing them yet reads them too (the release that switches).
        assert plain.for_challenge(keys.challenge_id) == keys
    # And the old form is read by both.
    old = plain.new_challenge(number)
    assert old.challenge_id.startswith(plain.number_tag(number) + ".")
    assert opaque.for_challenge(old.challenge_id) == old


def test_a_forged_opaque_block_routes_nowhere() -> None:
    keys = KeySpace("otp", "k" * 32, opaque_ids=True)
    issued = keys.new_challenge("+447400123456")
    block, random_part = issued.challenge_id.split(".")
    altered = block[:5] + ("A" if block[5] != "A" else "B") + block[6:]
    forged = keys.for_challenge(f"{altered}.{random_part}")
    assert forged is not None
    assert forged.forged
    # Another key's block, or another id's random part, is forged too.
    other = KeySpace("otp", "j" * 32).for_challenge(issued.challenge_id)
    assert other is not None
    assert other.forged
    swapped = keys.for_challenge(f"{block}.{keys.new_challenge('+447400123456').random_part}")
    assert swapped is not None
    assert swapped.forged
    # A spelling with stray base64 bits (the last of 22 characters holds two bits: "B" sets
    # a third) is no id at all, so no id has two spellings.
    assert keys.for_challenge(f"{block[:-1]}B.{random_part}") is None
