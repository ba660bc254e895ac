"""Every Redis key name otpservice uses, under one prefix, laid out for Redis Cluster.

Per-number keys share the hash tag ``{T}``, where ``T`` is an HMAC of the E.164 number under the
index key (never the number in clear, and not the pepper, so rotating the pepper keeps counters).
Every script touches keys of one tag only, so it runs on one Cluster slot. A challenge id is
``T.R``, or with ``ids.opaque`` ``B.R`` (B one AES block over T): it carries its number's tag,
so ``/verify`` reaches the right slot without a lookup.

Per number (tag ``T``)::

    P:{T}:c:R      hash    one challenge (status, hash, pepper id, attempts, expiry, client)
    P:{T}:actives  hash    client -> id part R of its current challenge for the number; that
                           client's next one replaces it, another client's does not
    P:{T}:active   string  id part R of the newest challenge of any client: what the release
                           before reads (written for it for one release, then dropped)
    P:{T}:sends    zset    send times (ms) for the rolling send windows, member R
    P:{T}:guard    hash    settled failures, lock-until and lockout level of the number
    P:{T}:inflight zset    the number's verification attempts awaiting a verdict
    P:{T}:optout   hash    the number's opt-out (no expiry: the law wants it kept); the number
                           in it sealed
    P:{T}:optout:log list  its opt-out and opt-in changes, newest first, at most 100
    P:{T}:optout:kw  set   keyed digests of the keyword replies that reached its opt-out
    P:{T}:in:M     string  a reply M (digest of its message id) already handled; kept
                           privacy.retention_days
    P:{T}:reply:K  string  the service answered keyword K (opt_out, opt_in, help); 5 minutes

Per API client and subject of the authenticator-app factors (tag ``S``, an HMAC of the client
and the app's subject id under the index key: no subject in clear)::

    P:{S}:totp:active   hash    the subject's active factor (id part, client, sealed secret
                                and label, digits, period, algorithm, last step used,
                                recovery-code hashes by slot)
    P:{S}:totp:pending  hash    its pending factor, until activated or expired
    P:{S}:totp:guard    hash    settled failures, lock-until, lockout level; recovery failures
                                and when their 24 hours end
    P:{S}:totp:inflight zset    codes being checked (TOTP and recovery): reservation -> ms
    P:{S}:totp:rinflight zset   the recovery codes among them
    P:{S}:totp:enrols   zset    enrolment times, for the hourly limit

A factor id is always opaque: one AES block over (S, the first bytes of its random part),
under a key of its own, then ``.R``, so it names its subject's slot and nothing else.

Elsewhere::

    P:idem:{H}     string  an idempotency record; H = SHA-256 of client and key, its own slot
    P:ready:{N}    string  written by the readiness script, one N per Cluster primary
    P:{Q:i}:stream stream  shard i of queue Q's entries (consumer group "workers"); Q is
                           "outbox" (SMS to send) or "events" (events for the app's callback
                           URL); redis.queue_shards shards, each its own slot
    P:{Q:i}:delayed zset   shard i's entries waiting for a retry, by due ms
    P:{Q:i}:once:D string  set while the entry of dedupe id D (an SMS's send id) may be in
                           shard i: a retried enqueue adds it once (queue_add.lua)
    P:{Q}:stream,   the same, unsharded, as the release before wrote them: drained by
    P:{Q}:delayed          workers for one release, never added to (docs/operations.md)
    P:rate:{S}     string  next send time of provider S's sender (the fleet-wide rate limit)
    P:{q:R:S}      zset    abuse rule R's rolling windows for subject S (a keyed digest of
                           the IP, prefix, country, client, or "all"), one member per request
    P:{q:R:S:i}    zset    shard i of the same, when the rule's limit is large enough to
                           shard (store/quotas.py): each shard its own slot and share of L
    P:{stats:H}    hash    analytics counters of Unix hour H: "<metric>|<country>|<provider>"
    P:{fg:C:i}     hash    shard i of the codes sent to and verified by calling code C and
                           its prefixes ("+44", "+4470"), by twelfths of the window; each
                           process adds to one shard (store/fraud.py)
    P:{fg:C:i}:src:X:j zset  in the same slot, the codes each source (an API client and end-user
                           network, keyed) sent to prefix X ("s:<source>") and verified
                           ("v:<source>"), in twelfth j of the window
    P:{fg}:trips   hash    the destinations the fraud guard has tripped, their figures and
                           whom they refuse (the release before kept P:{fg}:tripped, refusing
                           everyone: the two releases judge apart during a deploy)
    P:{events}:feed  stream  every event for the app, for apps that pull; trimmed after
                           privacy.retention_days
    P:{optouts}:index zset  every opted-out number as a keyed digest (score 0: pages go by it)
    P:{optouts}:numbers hash  digest -> the number, sealed with the outbox key
    P:{audit}:stream stream lockouts, fraud-guard trips and clears, operator changes

Queue Q is also "replies": the service's answers to STOP, START and HELP.

Checks that span slots (the abuse rules per IP, prefix, country, client, global) each run
their own atomic step per slot and give back what a later refusal did not use.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

TAG_BYTES = 12
CHALLENGE_RANDOM_BYTES = 16
# The fraud guard's window is kept in twelfths (SLOTS in fraud_counts.lua).
FRAUD_WINDOW_SLOTS = 12
# The random bytes an opaque id's block repeats, so a forged block is told apart by decryption.
_CHECK_BYTES = 16 - TAG_BYTES
_B64 = "[A-Za-z0-9_-]"
# "T.R": the number's tag in clear (the release before; the same for every id of a number).
_PLAIN_ID = re.compile(rf"^({_B64}{{16}})\.({_B64}{{22}})$")
# "B.R": B one AES-256 block over (tag, the first bytes of R): no two ids of a number alike.
_OPAQUE_ID = re.compile(rf"^({_B64}{{22}})\.({_B64}{{22}})$")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    """The bytes of unpadded base64url (checked by the caller's pattern first)."""
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    return raw if _b64(raw) == text else b""  # stray low bits: another spelling, refused


def _opaque_id(cipher: Cipher[modes.ECB], tag: bytes, random_part: str) -> str:
    """``B.R``: B one AES block over the tag and the first bytes of the random part R."""
    encryptor = cipher.encryptor()
    block = encryptor.update(tag + _unb64(random_part)[:_CHECK_BYTES]) + encryptor.finalize()
    return f"{_b64(block)}.{random_part}"


def _open_opaque(cipher: Cipher[modes.ECB], opaque_id: str) -> tuple[str, str, bool] | None:
    """The tag, random part and whether it is forged (its block does not decrypt to its own
    random part) of an opaque id ``B.R``; None when it is malformed."""
    match = _OPAQUE_ID.fullmatch(opaque_id)
    if match is None:
        return None
    block, random_part = _unb64(match.group(1)), match.group(2)
    random_bytes = _unb64(random_part)
    if len(block) != 16 or len(random_bytes) != CHALLENGE_RANDOM_BYTES:
        return None  # base64 with stray bits: not an id this service made
    decryptor = cipher.decryptor()
    plain = decryptor.update(block) + decryptor.finalize()
    forged = not hmac.compare_digest(plain[TAG_BYTES:], random_bytes[:_CHECK_BYTES])
    return _b64(plain[:TAG_BYTES]), random_part, forged


@dataclass(frozen=True, slots=True)
class ChallengeKeys:
    """The keys one challenge's scripts touch, all in its number's slot."""

    challenge_id: str
    # The number's hash tag, which every key below carries.
    tag: str
    random_part: str
    # An opaque id whose block did not decrypt to its own random part: routes nowhere.
    forged: bool
    challenge: str
    active: str
    actives: str
    sends: str
    guard: str
    inflight: str
    optout: str


@dataclass(frozen=True, slots=True)
class SubjectKeys:
    """The keys of one (client, subject)'s authenticator-app factors, all in one slot."""

    tag: str
    active: str
    pending: str
    guard: str
    inflight: str
    recovery_inflight: str
    enrolments: str

    @property
    def all(self) -> tuple[str, ...]:
        """Every key of the subject (what erasing it deletes)."""
        return (
            self.active,
            self.pending,
            self.guard,
            self.inflight,
            self.recovery_inflight,
            self.enrolments,
        )


@dataclass(frozen=True, slots=True)
class FactorRef:
    """What a factor id names: its subject's keys and its random part (``forged``: an id no
    key made, which names no factor)."""

    factor_id: str
    random_part: str
    keys: SubjectKeys
    forged: bool


class KeySpace:
    """Builds key names; the only place that knows them."""

    def __init__(self, prefix: str, index_key: str, *, opaque_ids: bool = False) -> None:
        self._prefix = prefix
        self._index_key = index_key.encode()
        self._opaque_ids = opaque_ids
        id_key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"otpservice challenge ids"
        ).derive(self._index_key)
        self._id_cipher = Cipher(algorithms.AES256(id_key), modes.ECB())  # noqa: S305 (one block)
        factor_key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"otpservice factor ids"
        ).derive(self._index_key)
        self._factor_cipher = Cipher(algorithms.AES256(factor_key), modes.ECB())  # noqa: S305

    def number_tag(self, e164: str) -> str:
        """The hash tag of a number: HMAC-SHA256 under the index key, shortened."""
        return _b64(self._tag_bytes(e164))

    def _tag_bytes(self, e164: str) -> bytes:
        return hmac.new(self._index_key, e164.encode(), hashlib.sha256).digest()[:TAG_BYTES]

    def optout(self, e164: str) -> str:
        """The opt-out record of a number (in the number's slot, beside its challenges)."""
        return f"{self._prefix}:{{{self.number_tag(e164)}}}:optout"

    def optout_history(self, e164: str) -> str:
        """The number's opt-out changes (beside its opt-out record)."""
        return f"{self.optout(e164)}:log"

    def optout_keywords(self, e164: str) -> str:
        """The keyed digests of the keyword replies that reached the number's opt-out (beside
        it, kept like its history: a replayed STOP or START changes nothing)."""
        return f"{self.optout(e164)}:kw"

    def keyword_digest(self, message_id: str) -> str:
        """A keyword reply's provider message id, keyed: no message id is kept in clear."""
        digest = hmac.new(self._index_key, f"keyword\0{message_id}".encode(), hashlib.sha256)
        return _b64(digest.digest()[:16])

    def inbound_seen(self, e164: str, message_id: str) -> str:
        """Marks a reply from ``e164`` as handled, so a provider's repeat changes nothing."""
        digest = hashlib.sha256(message_id.encode()).hexdigest()[:24]
        return f"{self._prefix}:{{{self.number_tag(e164)}}}:in:{digest}"

    def reply_guard(self, e164: str, keyword: str) -> str:
        """Set while the service's answer to ``keyword`` from ``e164`` may not go out again."""
        return f"{self._prefix}:{{{self.number_tag(e164)}}}:reply:{keyword}"

    def kept_on_erasure(self, e164: str) -> tuple[str, ...]:
        """Prefixes of the number's keys an erasure keeps: the opt-out and its history, and
        the marks of handled replies and sent answers (so a repeat does not act again)."""
        base = f"{self._prefix}:{{{self.number_tag(e164)}}}"
        return (f"{base}:optout", f"{base}:in:", f"{base}:reply:")

    def number_pattern(self, e164: str) -> str:
        """A SCAN pattern for every key of the number (its slot's keys, the opt-out included)."""
        return f"{self._prefix}:{{{self.number_tag(e164)}}}:*"

    def optout_index(self) -> str:
        """The index of opted-out numbers (its own slot; kept beside the per-number records)."""
        return f"{self._prefix}:{{optouts}}:index"

    def optout_numbers(self) -> str:
        """The sealed numbers of the index's members (in the index's slot)."""
        return f"{self._prefix}:{{optouts}}:numbers"

    def optout_member(self, e164: str) -> str:
        """A number's member of the opt-out index: a keyed digest, so the index lists no
        number in clear (its sealed number is beside it)."""
        digest = hmac.new(self._index_key, f"optout\0{e164}".encode(), hashlib.sha256).digest()
        return _b64(digest[:16])

    def audit(self) -> str:
        """The audit stream: lockouts, fraud-guard changes, operator changes."""
        return f"{self._prefix}:{{audit}}:stream"

    def event_feed(self) -> str:
        """The stream of events apps may read (XREAD), in the event queue's slot."""
        return f"{self._prefix}:{{events}}:feed"

    def fingerprint(self, data: bytes) -> str:
        """A keyed digest of request data, safe to store: it cannot be reversed by guessing."""
        return hmac.new(self._index_key, b"fingerprint\0" + data, hashlib.sha256).hexdigest()

    def new_challenge(self, e164: str) -> ChallengeKeys:
        """Keys for a fresh challenge of ``e164`` with a new 128-bit random id: ``T.R`` (the
        number's tag in clear), or with ``ids.opaque`` ``B.R``, B one AES-256 block over the tag
        and the first bytes of R, under a key derived from the index key (HKDF), so ids of one
        number share nothing and still name its slot."""
        tag = self._tag_bytes(e164)
        random_bytes = secrets.token_bytes(CHALLENGE_RANDOM_BYTES)
        random_part = _b64(random_bytes)
        if not self._opaque_ids:
            return self._challenge_keys(_b64(tag), random_part)
        opaque_id = _opaque_id(self._id_cipher, tag, random_part)
        return self._challenge_keys(_b64(tag), random_part, opaque_id)

    def for_challenge(self, challenge_id: str) -> ChallengeKeys | None:
        """Keys for an existing challenge id of either form, or None when the id is malformed.
        An opaque id whose block decrypts to another random part is ``forged``: its keys name
        no challenge, and a caller spends what a real check would before saying so."""
        match = _PLAIN_ID.fullmatch(challenge_id)
        if match is not None:
            return self._challenge_keys(match.group(1), match.group(2))
        opened = _open_opaque(self._id_cipher, challenge_id)
        if opened is None:
            return None
        tag, random_part, forged = opened
        return self._challenge_keys(tag, random_part, challenge_id, forged=forged)

    def subject(self, client: str, subject: str) -> SubjectKeys:
        """The keys of a client's subject (the app's own user id), in one slot."""
        data = f"totp-subject\0{client}\0{subject}".encode()
        tag = hmac.new(self._index_key, data, hashlib.sha256).digest()[:TAG_BYTES]
        return self._subject_keys(_b64(tag))

    def new_factor(self, subject: SubjectKeys) -> FactorRef:
        """A fresh factor id of ``subject``: B.R, B one AES-256 block over (its tag, the first
        bytes of R), so factor ids share nothing visible and still name the subject's slot."""
        random_part = _b64(secrets.token_bytes(CHALLENGE_RANDOM_BYTES))
        return FactorRef(self.factor_id(subject, random_part), random_part, subject, forged=False)

    def factor_id(self, subject: SubjectKeys, random_part: str) -> str:
        """The id of ``subject``'s factor whose random part is ``random_part``."""
        return _opaque_id(self._factor_cipher, _unb64(subject.tag), random_part)

    def for_factor(self, factor_id: str) -> FactorRef | None:
        """What a factor id names, or None when it is malformed; ``forged`` when its block does
        not decrypt to its own random part."""
        opened = _open_opaque(self._factor_cipher, factor_id)
        if opened is None:
            return None
        tag, random_part, forged = opened
        return FactorRef(factor_id, random_part, self._subject_keys(tag), forged=forged)

    def _subject_keys(self, tag: str) -> SubjectKeys:
        base = f"{self._prefix}:{{{tag}}}:totp"
        return SubjectKeys(
            tag=tag,
            active=f"{base}:active",
            pending=f"{base}:pending",
            guard=f"{base}:guard",
            inflight=f"{base}:inflight",
            recovery_inflight=f"{base}:rinflight",
            enrolments=f"{base}:enrols",
        )

    def idempotency(self, client: str, key: str) -> str:
        """The record of an Idempotency-Key, scoped to the client."""
        digest = hashlib.sha256(f"{client}\0{key}".encode()).hexdigest()
        return f"{self._prefix}:idem:{{{digest[:32]}}}"

    def queue_once(self, name: str, shard: int, dedupe_id: str) -> str:
        """The mark of an entry added to shard ``shard`` under ``dedupe_id``, in its slot."""
        return f"{self._prefix}:{{{name}:{shard}}}:once:{dedupe_id}"

    def queue(self, name: str, shard: int | None) -> tuple[str, str]:
        """Shard ``shard`` of a queue (None: the unsharded layout of the release before): its
        stream and its delayed-retry set, in one slot, so one script holds both."""
        tag = name if shard is None else f"{name}:{shard}"
        return f"{self._prefix}:{{{tag}}}:stream", f"{self._prefix}:{{{tag}}}:delayed"

    def quota(self, rule: str, subject: str, shard: int | None = None) -> str:
        """A rule's budget for one subject (an IP, a prefix, a client, ...), its own slot. The
        subject is keyed, like a number, so IP addresses are not kept in clear. A sharded rule
        has one key per ``shard``, each on its own slot; an unsharded one keeps the plain key."""
        digest = hmac.new(self._index_key, f"quota\0{subject}".encode(), hashlib.sha256).digest()
        suffix = "" if shard is None else f":{shard}"
        return f"{self._prefix}:{{q:{rule}:{_b64(digest[:TAG_BYTES])}{suffix}}}"

    def fraud_counts(self, country: str, shard: int) -> str:
        """Shard ``shard`` of the fraud guard's counts for a calling code ("+44") and its
        number prefixes, its own slot."""
        return f"{self._prefix}:{{fg:{country}:{shard}}}"

    def fraud_sources(self, country: str, shard: int, prefix: str) -> list[str]:
        """The twelve source sets (one per twelfth of the window) of a prefix in shard ``shard``
        of its country's counts: the counts' slot, so one script holds them all."""
        base = self.fraud_counts(country, shard)
        return [f"{base}:src:{prefix}:{slot}" for slot in range(FRAUD_WINDOW_SLOTS)]

    def fraud_source(self, client: str, network: str) -> str:
        """The fraud guard's name for a source: an API client and an end user's network (its
        /24 or /64, or "" when the app sent no address), keyed so no address is kept."""
        data = f"fraud-source\0{client}\0{network}".encode()
        return _b64(hmac.new(self._index_key, data, hashlib.sha256).digest()[:12])

    def fraud_tripped(self) -> str:
        """The destinations the fraud guard has tripped, read by every process's loop."""
        return f"{self._prefix}:{{fg}}:trips"

    def stats(self, hour: int) -> str:
        """The analytics counters of one hour (Unix hours), in a slot of its own."""
        return f"{self._prefix}:{{stats:{hour}}}"

    def send_rate(self, provider: str) -> str:
        """The shared rate limit of one provider's sender."""
        return f"{self._prefix}:rate:{{{provider}}}"

    def readiness(self, shard: int = 0) -> str:
        """A key the readiness script writes; ``shard`` varies its hash tag to reach every node."""
        return f"{self._prefix}:ready:{{{shard}}}"

    def _challenge_keys(
        self, tag: str, random_part: str, challenge_id: str = "", *, forged: bool = False
    ) -> ChallengeKeys:
        base = f"{self._prefix}:{{{tag}}}"
        return ChallengeKeys(
            challenge_id=challenge_id or f"{tag}.{random_part}",
            tag=tag,
            random_part=random_part,
            forged=forged,
            challenge=f"{base}:c:{random_part}",
            active=f"{base}:active",
            actives=f"{base}:actives",
            sends=f"{base}:sends",
            guard=f"{base}:guard",
            inflight=f"{base}:inflight",
            optout=f"{base}:optout",
        )
