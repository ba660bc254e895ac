"""The settings schema: one frozen, typed value, its sections and their built-in defaults.

``sources`` reads them (TOML file, ``OTP_*`` variables, ``*_file`` secrets); the checks table
(``otpservice.validation``) turns them into ``ValidSettings``, the only kind a runtime takes.
"""

from __future__ import annotations

import math
import os
from datetime import date  # noqa: TC003 (msgspec reads the annotations at run time)
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import msgspec

# Limits a reviewer holds us to (security checklist); beyond them only with an explicit override.
SAFE_MAX_TTL_SECONDS = 600
SAFE_MAX_ATTEMPTS = 10
SAFE_MIN_DIGITS = 6
# Past these, a protection is weakened: ``unsafe.allow_weak_limits`` must say so.
SAFE_MAX_LOCKOUT_FAILURES = 20
SAFE_MIN_LOCKOUT_SECONDS = 300
SAFE_MIN_SEND_INTERVAL_SECONDS = 10
SAFE_MAX_SENDS_PER_HOUR = 20
SAFE_MAX_SENDS_PER_DAY = 50
SAFE_MIN_HASH_MEMORY_KIB = 8192
MIN_SECRET_BYTES = 16


class Base(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every settings Struct: immutable, keyword-only, strict about unknown keys."""


PositiveInt = Annotated[int, msgspec.Meta(ge=1)]

# Each regex a text setting must match, and what it accepts in words: msgspec's own error
# quotes the regex, and config errors say what is accepted instead (``sources``).
PATTERN_WORDS: dict[str, str] = {}


def matching(pattern: str, words: str) -> msgspec.Meta:
    """The constraint "matches ``pattern``", explained as ``words`` in config errors."""
    PATTERN_WORDS[pattern] = words
    return msgspec.Meta(pattern=pattern, description=words)


class CodeSettings(Base, frozen=True):
    """What a code looks like and how long it lives."""

    digits: Annotated[int, msgspec.Meta(ge=4, le=10)] = 6
    ttl_seconds: PositiveInt = 300
    max_attempts: PositiveInt = 5
    # How long an ended challenge is remembered, so an old id reads "expired", not "unknown".
    tombstone_seconds: Annotated[int, msgspec.Meta(ge=0)] = 600


class IdSettings(Base, frozen=True):
    """How challenge ids look."""

    # Issue opaque ids (one AES block over the number's tag: no two ids of a number alike)
    # instead of "tag.random" ids. Both forms are accepted either way; on by default in the
    # next release, so a fleet deployed with this one understands them before any is issued.
    opaque: bool = False


class LockoutSettings(Base, frozen=True):
    """Per-number failure counter, independent of challenges."""

    # The security checklist caps this at 100.
    max_failures: Annotated[int, msgspec.Meta(ge=1, le=100)] = 10
    base_seconds: PositiveInt = 3600
    max_seconds: PositiveInt = 86400
    # Failures and the lockout level are forgotten after this long without a failure.
    memory_seconds: PositiveInt = 86400


class TotpSettings(Base, frozen=True):
    """Authenticator-app factors (TOTP). Digits, period and algorithm are stored with each
    factor when it is enrolled: a change applies to new factors only."""

    # The name the authenticator app shows; None: ``sms.app_name``.
    issuer: (
        Annotated[
            str,
            msgspec.Meta(min_length=1, max_length=40),
            matching(r"^[^:]+\Z", "1 to 40 characters without ':'"),
        ]
        | None
    ) = None
    digits: Literal[6, 8] = 6
    period_seconds: Annotated[int, msgspec.Meta(ge=15, le=120)] = 30
    # Some apps (Google Authenticator among them) ignore anything but SHA1.
    algorithm: Literal["SHA1", "SHA256", "SHA512"] = "SHA1"
    # Steps accepted before and after the current one (clock drift of the phone).
    window: Annotated[int, msgspec.Meta(ge=0, le=2)] = 1
    pending_ttl_seconds: Annotated[int, msgspec.Meta(ge=60, le=86400)] = 600
    # The per-subject lockout for wrong TOTP and recovery codes; None: the values of ``lockout``.
    lockout: LockoutSettings | None = None
    # Wrong recovery codes a subject may make in 24 hours before recovery is blocked too.
    recovery_max_failures: Annotated[int, msgspec.Meta(ge=1, le=100)] = 10


class SendLimitSettings(Base, frozen=True):
    """Per-number send throttling: a minimum interval plus rolling windows."""

    min_interval_seconds: Annotated[int, msgspec.Meta(ge=0)] = 30
    per_hour: PositiveInt = 5
    per_day: PositiveInt = 10


class HashingSettings(Base, frozen=True):
    """argon2id parameters and the concurrency cap that bounds memory."""

    memory_kib: Annotated[int, msgspec.Meta(ge=8)] = 19456
    time_cost: PositiveInt = 2
    parallelism: PositiveInt = 1
    # 0 means one per CPU this process may use (its cgroup quota or affinity).
    max_concurrent: Annotated[int, msgspec.Meta(ge=0)] = 0
    # Requests admitted to wait for a hashing thread; more are refused with 503 at once.
    max_waiting: PositiveInt = 256

    @property
    def concurrency(self) -> int:
        """Hashes that may run at once."""
        return self.max_concurrent or available_cpus()


def available_cpus() -> int:
    """CPUs this process may use: the cgroup v2 quota if set, else its CPU affinity."""
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return cpus
    if quota == "max":
        return cpus
    return max(1, min(cpus, math.ceil(int(quota) / int(period))))


class SentinelSettings(Base, frozen=True):
    """Redis behind Sentinel: the sentinels to ask, and the name of the master they watch.

    The master's password stays ``secrets.redis_password``; the sentinels' own is
    ``secrets.redis_sentinel_password``.
    """

    master_name: Annotated[
        str, matching(r"^[A-Za-z0-9_.-]{1,64}\Z", "1 to 64 letters, digits, '_', '.' or '-'")
    ]
    nodes: Annotated[
        list[
            Annotated[
                str,
                matching(
                    r"^[A-Za-z0-9.-]{1,253}:[0-9]{1,5}\Z",
                    "host:port, such as sentinel-0.redis:26379",
                ),
            ]
        ],
        msgspec.Meta(min_length=1, max_length=16),
    ]
    # The sentinels' ACL user, if they have one (the master is reached with redis_password).
    username: str | None = None
    # TLS to the sentinels and to the master, trusting redis.tls_ca_file (or the system's CAs).
    tls: bool = False

    def addresses(self) -> list[tuple[str, int]]:
        """The sentinels as (host, port)."""
        return [(host, int(port)) for host, _, port in (n.rpartition(":") for n in self.nodes)]


class RedisSettings(Base, frozen=True):
    """Where the state lives."""

    # None means the embedded in-memory store, which only --dev allows (or Sentinel's master).
    url: str | None = None
    cluster: bool = False
    key_prefix: Annotated[
        str, matching(r"^[A-Za-z0-9_.-]{1,32}\Z", "1 to 32 letters, digits, '_', '.' or '-'")
    ] = "otp"
    socket_timeout_seconds: Annotated[float, msgspec.Meta(gt=0)] = 2.0
    connect_timeout_seconds: Annotated[float, msgspec.Meta(gt=0)] = 2.0
    # Commands in flight per process; more wait for a slot. The client's pool (per node) and,
    # on one Redis, the scripts' own connections each keep up to this many.
    max_connections: PositiveInt = 64
    # CA certificates to trust for a rediss:// server (a private CA); default: the system's.
    tls_ca_file: str | None = None
    # Find the master through Sentinel instead of redis.url.
    sentinel: SentinelSettings | None = None
    # Durable acknowledgements: replicas that must hold a promise-keeping write (an approval, a
    # spent attempt, an opt-out, ...) before it is answered; 0 answers as soon as the primary has
    # it. Each such script is followed by WAIT on its own connection.
    min_replicas_acked: Annotated[int, msgspec.Meta(ge=0, le=16)] = 0
    wait_timeout_ms: Annotated[int, msgspec.Meta(ge=1)] = 500
    # Shards of each shared abuse counter (global, per country, per client, ...): a rule with
    # limit L counts on min(shards, L // 20) keys of their own slots, so no one master holds it.
    shards: Annotated[int, msgspec.Meta(ge=1, le=256)] = 16
    # Shard streams of each queue (outbox, replies, events), each its own slot: a master's
    # failover stops only its shards' deliveries, and no one master takes every enqueue.
    queue_shards: Annotated[int, msgspec.Meta(ge=1, le=64)] = 4


class ApiToken(Base, frozen=True):
    """One API client: its name, the SHA-256 of its bearer token, and its scopes."""

    client: Annotated[
        str, matching(r"^[A-Za-z0-9_.-]{1,64}\Z", "1 to 64 letters, digits, '_', '.' or '-'")
    ]
    token_sha256: Annotated[
        str,
        matching(
            r"^[0-9a-f]{64}\Z",
            "the SHA-256 of the token: 64 lowercase hexadecimal digits "
            "(`otpservice secrets generate` prints it)",
        ),
    ]
    scopes: list[Literal["otp", "admin"]] = msgspec.field(default_factory=lambda: ["otp"])


ProviderName = Annotated[
    str, matching(r"^[a-z0-9_-]{1,32}\Z", "1 to 32 lowercase letters, digits, '_' or '-'")
]
E164 = Annotated[
    str,
    matching(
        r"^\+[1-9][0-9]{6,14}\Z",
        "a phone number in E.164 form: '+', the country code and the number, 7 to 15 digits "
        "in all, no spaces",
    ),
]
HttpsUrl = Annotated[
    str, matching(r"^https?://[^\s]+\Z", "an https:// (or http://) URL without spaces")
]


class ProviderBase(Base, frozen=True, kw_only=True, tag_field="type"):
    """Fields every provider has. Secrets are redacted from ``repr``."""

    # Names the provider in logs, metrics and the challenge's delivery state.
    name: ProviderName = ""
    timeout_seconds: Annotated[float, msgspec.Meta(gt=0, le=60)] = 10.0
    # What the sender (number, messaging service) may send, for the whole fleet of workers:
    # messages per second and how many may go back to back. None: no limit of ours.
    messages_per_second: Annotated[float, msgspec.Meta(gt=0)] | None = None
    burst: PositiveInt = 1

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.label!r}, <secrets redacted>)"

    __str__ = __repr__

    @property
    def label(self) -> str:
        """The configured name, or the provider type."""
        return self.name or self.kind

    @property
    def kind(self) -> str:
        """The provider type: its ``type`` in the config."""
        return str(type(self).__struct_config__.tag)


# Who answers STOP, START and HELP sent to a sender: the provider (or the carrier), or this
# service. A person must not get two answers (see the README's "Replies" section).
KeywordResponder = Literal["provider", "service"]


class ConsoleProvider(ProviderBase, frozen=True, kw_only=True, tag="console"):
    """Prints messages, codes included: development, tests and benchmarks only."""

    keyword_replies: KeywordResponder = "service"


# The forms a provider's sender (``from_number``) can take; see ``SENDER_FORM_WORDS``.
SenderForm = Literal["phone_number", "short_code", "alphanumeric"]
SENDER_FORM_WORDS: dict[SenderForm, str] = {
    "phone_number": "a phone number in E.164 form ('+' and digits, such as +14155550100)",
    "short_code": "a short code of 3 to 8 digits",
    "alphanumeric": (
        "an alphanumeric sender ID of 1 to 11 letters, digits and spaces, with at least one letter"
    ),
}


class AcsProvider(ProviderBase, frozen=True, kw_only=True, tag="acs"):
    """Azure Communication Services SMS, signed with the resource's access key."""

    # The resource's numbers, short codes and alphanumeric sender IDs can all send.
    sender_forms: ClassVar[tuple[SenderForm, ...]] = ("phone_number", "short_code", "alphanumeric")

    # "endpoint=https://<resource>.communication.azure.com/;accesskey=<base64 key>"
    connection_string: str = ""
    from_number: str
    api_version: str = "2021-03-07"
    # Toll-free numbers: the carrier answers; short codes: ACS does (program brief texts).
    keyword_replies: KeywordResponder = "provider"


class TwilioProvider(ProviderBase, frozen=True, kw_only=True, tag="twilio"):
    """Twilio Programmable Messaging (the Messages API)."""

    # Twilio's From takes a number, a short code or an alphanumeric sender ID.
    sender_forms: ClassVar[tuple[SenderForm, ...]] = ("phone_number", "short_code", "alphanumeric")

    account_sid: Annotated[
        str, matching(r"^AC[0-9a-fA-F]{32}\Z", "'AC' and 32 hexadecimal digits (an Account SID)")
    ]
    auth_token: str = ""
    # One of the two: a sender number, or a Messaging Service that picks one.
    from_number: str | None = None
    messaging_service_sid: (
        Annotated[
            str,
            matching(
                r"^MG[0-9a-fA-F]{32}\Z", "'MG' and 32 hexadecimal digits (a Messaging Service SID)"
            ),
        ]
        | None
    ) = None
    api_base_url: HttpsUrl = "https://api.twilio.com"
    # Twilio answers on long codes and toll-free numbers; a short code needs "service".
    keyword_replies: KeywordResponder = "provider"


class GenericProvider(ProviderBase, frozen=True, kw_only=True, tag="generic"):
    """Any gateway: a JSON POST signed the Standard Webhooks way."""

    url: HttpsUrl
    # The Standard Webhooks secret, "whsec_" + base64.
    secret: str = ""
    # True when the gateway drops a repeated webhook-id: then a send that timed out is retried.
    deduplicates: bool = False
    keyword_replies: KeywordResponder = "service"


Provider = ConsoleProvider | AcsProvider | TwilioProvider | GenericProvider
# The secret field of each provider type, also accepted as ``<field>_file``.
PROVIDER_SECRETS = {"acs": "connection_string", "twilio": "auth_token", "generic": "secret"}

DEFAULT_TEMPLATE = "{code} is your {app_name} code. It expires in {ttl_minutes} min."


ReplyText = Annotated[str, msgspec.Meta(min_length=1, max_length=300)]


class KeywordReplyTexts(Base, frozen=True):
    """The service's answers to keywords; ``{app_name}`` is replaced by ``sms.app_name``."""

    opt_out: ReplyText = (
        "You have successfully been unsubscribed to messages from this number. "
        "Reply START to resubscribe."
    )
    opt_in: ReplyText = (
        "You have successfully been re-subscribed to messages from this number. "
        "Reply STOP to unsubscribe."
    )
    help: ReplyText = (
        "{app_name}: sign-in codes. Reply STOP to unsubscribe. Msg&data rates may apply."
    )


class SmsSettings(Base, frozen=True):
    """How messages are sent and what they say."""

    # Tried in order: after one certainly failed a message, the next is tried.
    providers: list[Provider] = msgspec.field(default_factory=lambda: [ConsoleProvider()])
    app_name: Annotated[str, msgspec.Meta(min_length=1, max_length=40)] = "otpservice"
    # Message text per language tag ("en", "pt-BR"); "pt-BR" falls back to "pt", then default.
    templates: dict[str, str] = msgspec.field(default_factory=lambda: {"en": DEFAULT_TEMPLATE})
    default_locale: str = "en"
    # A code message longer than one SMS segment costs double and may arrive split.
    allow_multipart: bool = False
    # Autofill: the 11-character hash of an Android app using the SMS Retriever API, and the
    # origin's domain for the WebOTP API (adds the line "@domain #code").
    android_app_hash: (
        Annotated[
            str,
            matching(r"^[A-Za-z0-9+/]{11}\Z", "11 characters of letters, digits, '+' or '/'"),
        ]
        | None
    ) = None
    webotp_domain: (
        Annotated[
            str,
            matching(
                r"^[a-z0-9.-]{1,253}\Z",
                "a domain name: lowercase letters, digits, '.' and '-', at most 253",
            ),
        ]
        | None
    ) = None
    # Words that opt out besides STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT, REVOKE, OPTOUT
    # and "OPT OUT" (matched like them: the whole reply, any case).
    extra_opt_out_words: list[Annotated[str, msgspec.Meta(min_length=1, max_length=40)]] = (
        msgspec.field(default_factory=list)
    )
    # The answers to STOP, START and HELP where a sender's keyword_replies is "service".
    replies: KeywordReplyTexts = KeywordReplyTexts()
    # Consecutive certain failures that open a provider's circuit, and for how long.
    breaker_failures: PositiveInt = 5
    breaker_seconds: PositiveInt = 30


class OutboxSettings(Base, frozen=True):
    """The durable queue between /challenge and the providers, and its delivery workers."""

    # Run delivery workers inside `otpservice serve` (else only `otpservice worker` sends).
    workers_in_process: bool = True
    # Messages being sent at once by one process.
    concurrency: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 16
    # A message a worker took and has not finished for this long is taken over by another
    # (the first one died). Must be well inside the code's lifetime; 0: a tenth of
    # code.ttl_seconds, between 1 and 30 seconds.
    claim_idle_seconds: Annotated[int, msgspec.Meta(ge=0)] = 0
    # Retries when no provider took a message: exponential backoff with full jitter.
    retry_base_seconds: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    retry_max_seconds: Annotated[float, msgspec.Meta(gt=0)] = 30.0


class EventSettings(Base, frozen=True):
    """Where the login app hears about its challenges (challenge.delivered, challenge.failed)."""

    # None: no events are POSTed.
    callback_url: HttpsUrl | None = None
    # Also append every event to the Redis Stream P:{events}:feed, for apps that pull.
    stream: bool = True
    # Keep the text of replies (inbound.message "body") in that stream too. Off: a stream
    # entry says who replied and which keyword, not what they wrote (the POST still has it).
    feed_bodies: bool = False


class PrivacySettings(Base, frozen=True):
    """How long personal data is kept (opt-outs are kept until the person opts back in)."""

    # Replies (their bodies) and delivery outcomes in the event stream are trimmed after this.
    retention_days: Annotated[int, msgspec.Meta(ge=1, le=3650)] = 30


Mode = Literal["enforce", "monitor"]
# A calling code or number prefix: "+44", "+4474".
NUMBER_PREFIX_PATTERN = r"^\+[1-9][0-9]{0,14}\Z"
NumberPrefix = Annotated[
    str,
    matching(
        NUMBER_PREFIX_PATTERN,
        "a number prefix: '+' and 1 to 15 digits, no spaces (such as +44 or +4474)",
    ),
]
CountryCode = Annotated[
    str, matching(r"^[A-Z]{2}\Z", "a two-letter ISO 3166 country code in capitals (such as GB)")
]
NumberType = Literal[
    "premium_rate",
    "shared_cost",
    "unknown",
    "voip",
    "toll_free",
    "personal_number",
    "pager",
    "uan",
    "voicemail",
    "fixed_line",
    "mobile",
    "fixed_line_or_mobile",
]


class Window(Base, frozen=True):
    """At most ``limit`` challenges in any ``seconds`` (a rolling window)."""

    limit: PositiveInt
    seconds: Annotated[int, msgspec.Meta(ge=1, le=7 * 86400)]


class RateRule(Base, frozen=True):
    """A named budget of challenges for one kind of subject, over one or more windows.

    Scopes: ``ip`` (the end user's ``client_ip``), ``ip_prefix`` (its /24 or /64),
    ``country`` (calling code), ``prefix`` (calling code and the first ``prefix_digits``
    national digits, as "+44 70"), ``global`` (everything: a cost ceiling), ``client`` (the
    API client). Rules on an IP are skipped when the app passes no ``client_ip``.
    """

    name: Annotated[
        str, matching(r"^[a-z0-9_]{1,40}\Z", "1 to 40 lowercase letters, digits or '_'")
    ]
    scope: Literal["ip", "ip_prefix", "country", "prefix", "global", "client"]
    windows: Annotated[list[Window], msgspec.Meta(min_length=1, max_length=4)]
    # "monitor": count and log what would be refused, refuse nothing.
    mode: Mode = "enforce"
    ipv4_prefix: Annotated[int, msgspec.Meta(ge=8, le=32)] = 24
    ipv6_prefix: Annotated[int, msgspec.Meta(ge=16, le=128)] = 64
    prefix_digits: Annotated[int, msgspec.Meta(ge=1, le=4)] = 2


def _default_rules() -> list[RateRule]:
    return [
        RateRule(
            name="per_ip",
            scope="ip",
            windows=[Window(limit=10, seconds=3600), Window(limit=20, seconds=86400)],
        ),
        RateRule(name="per_ip_prefix", scope="ip_prefix", windows=[Window(limit=50, seconds=3600)]),
        RateRule(name="per_prefix", scope="prefix", windows=[Window(limit=300, seconds=3600)]),
        RateRule(name="per_country", scope="country", windows=[Window(limit=1000, seconds=3600)]),
        RateRule(
            name="global",
            scope="global",
            windows=[Window(limit=300, seconds=60), Window(limit=20000, seconds=86400)],
        ),
        RateRule(name="per_client", scope="client", windows=[Window(limit=600, seconds=60)]),
    ]


class GeoSettings(Base, frozen=True):
    """Where codes may go: countries (ISO 3166 codes), number prefixes, number types."""

    mode: Mode = "enforce"
    # Empty: every country not denied.
    allow_countries: list[CountryCode] = msgspec.field(default_factory=list)
    deny_countries: list[CountryCode] = msgspec.field(default_factory=list)
    # E.164 prefixes ("+4470"); an allowed prefix wins over a denied country.
    allow_prefixes: list[NumberPrefix] = msgspec.field(default_factory=list)
    deny_prefixes: list[NumberPrefix] = msgspec.field(default_factory=list)
    # Number types (as phonenumbers classifies them) no code goes to: SMS pumping's favourites.
    deny_number_types: list[NumberType] = msgspec.field(
        default_factory=lambda: ["premium_rate", "shared_cost", "unknown"]
    )


class FraudGuardSettings(Base, frozen=True):
    """Trips when few codes sent to a country or prefix get verified (SMS pumping)."""

    mode: Mode = "enforce"
    enabled: bool = True
    # Verified / sent over the window under this, after min_sent, refuses new challenges there.
    floor: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.2
    min_sent: PositiveInt = 50
    window_seconds: Annotated[int, msgspec.Meta(ge=300, le=86400)] = 3600
    # The prefix watched besides the country: calling code plus this many national digits.
    prefix_digits: Annotated[int, msgspec.Meta(ge=1, le=4)] = 2
    # A prefix trips for everyone only when its unverified codes came from at least this many
    # sources (an API client and a /24 or /64) with none above half; else only for them.
    min_sources: Annotated[int, msgspec.Meta(ge=2, le=100)] = 5
    # A whole calling code trips only so: "prefixes" once three of its prefixes have tripped
    # for everyone, "operator" never (an alert, for an operator to act on).
    country_trip: Literal["prefixes", "operator"] = "operator"


class FixedCodeNumber(Base, frozen=True):
    """A number for the app's own end-to-end tests and app-store review accounts: no SMS is
    sent to it, its fixed code verifies, and every other rule still applies."""

    phone: E164
    # The last day it works (at most 90 days ahead; an expired entry is refused).
    expires_on: date
    # The fixed code: a file holding it, or its argon2id PHC string (one of the two).
    code_file: str | None = None
    code_argon2: str | None = None


class SafeList(Base, frozen=True):
    """Numbers and prefixes exempt from the abuse rules (never from the per-number limits,
    the lockout or the attempt budget): the company's test phones, VIP routes."""

    numbers: list[E164] = msgspec.field(default_factory=list)
    prefixes: list[NumberPrefix] = msgspec.field(default_factory=list)


class AbuseSettings(Base, frozen=True):
    """Limits beyond one number, tuned by the security team; re-read on change (hot reload)."""

    rules: list[RateRule] = msgspec.field(default_factory=_default_rules)
    geo: GeoSettings = GeoSettings()
    fraud_guard: FraudGuardSettings = FraudGuardSettings()
    safe_list: SafeList = SafeList()


class AnalyticsSettings(Base, frozen=True):
    """Usage and conversion counters (no personal data: countries and providers only)."""

    keep_days: Annotated[int, msgspec.Meta(ge=1, le=3650)] = 90


class PodListener(Base, frozen=True):
    """A second listener, on the pod's address, for the kubelet's probes, Prometheus and the
    providers' webhooks: it serves the health routes, /metrics and /webhooks/* only."""

    host: str = "0.0.0.0"  # noqa: S104 (the pod address is the point)
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 8081


class UnsafeOverrides(Base, frozen=True):
    """Explicit acknowledgements for settings outside the safe range."""

    allow_long_ttl: bool = False
    allow_many_attempts: bool = False
    allow_short_codes: bool = False
    allow_unauthenticated_bind: bool = False
    # The console sender prints codes; outside --dev only for benchmarks and tests.
    allow_console_sender: bool = False
    # Provider and callback URLs over plain http to a non-loopback host.
    allow_plain_http: bool = False
    # Lockout, per-number send limits or argon2 memory past their safe range (SAFE_*).
    allow_weak_limits: bool = False
    # test_numbers outside --dev (fixed codes that work without an SMS).
    allow_test_numbers: bool = False


class Secrets(Base, frozen=True):
    """Server-side secrets; never printed (see ``__repr__``)."""

    pepper: str | None = None
    previous_pepper: str | None = None
    # Keys the per-number hash tag; separate from the pepper so rotating it keeps counters.
    index_key: str | None = None
    redis_password: str | None = None
    # AUTH to the sentinels (redis.sentinel), when they need it.
    redis_sentinel_password: str | None = None
    # Seals messages in the outbox (AES-256-GCM): 32 random bytes, base64.
    outbox_key: str | None = None
    previous_outbox_key: str | None = None
    # What Event Grid must send (header X-Webhook-Secret, or ?secret=) to POST /webhooks/acs.
    acs_webhook_secret: str | None = None
    # Signs the events POSTed to events.callback_url (Standard Webhooks: "whsec_" + base64).
    events_secret: str | None = None
    # Seals authenticator-app secrets and keys recovery codes: 32 random bytes, base64. Without
    # it (outside --dev) the /totp routes answer 501 totp_not_configured.
    totp_key: str | None = None
    previous_totp_key: str | None = None

    def __repr__(self) -> str:
        present = [name for name in SECRET_NAMES if getattr(self, name)]
        return f"Secrets(<redacted: {', '.join(present) or 'none'}>)"

    __str__ = __repr__


# Every secret's name, each also accepted as ``<name>_file``.
SECRET_NAMES = tuple(Secrets.__struct_fields__)
# What production cannot run without; development mode generates them.
REQUIRED_SECRETS = ("pepper", "index_key", "outbox_key")
# What development mode generates: the required secrets, and the key the TOTP routes need.
DEV_SECRETS = (*REQUIRED_SECRETS, "totp_key")


class RequiredSecrets(Secrets, frozen=True, kw_only=True):
    """``Secrets`` once checked: the required ones are there (see ``REQUIRED_SECRETS``)."""

    pepper: str
    index_key: str
    outbox_key: str


class Settings(Base, frozen=True):
    """The whole configuration of one otpservice process."""

    @property
    def claim_idle_seconds(self) -> int:
        """How long a taken outbox message may sit unfinished before another worker takes it."""
        return self.outbox.claim_idle_seconds or min(30, max(1, self.code.ttl_seconds // 10))

    @property
    def hashing_threads(self) -> int:
        """Hashing threads of each worker process: the concurrency cap shared between them."""
        return max(1, self.hashing.concurrency // self.workers)

    # Set by the --dev flag only (load_settings refuses it from a file or the environment).
    dev_mode: bool = False
    # The file these settings came from, re-read on change (set by load_settings only).
    config_path: str | None = None
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8080
    # None: one listener (the API's) serves everything.
    pod_listener: PodListener | None = None
    # Processes serving the API (the Python work per request is bound to one core each);
    # hashing.max_concurrent is shared out between them.
    workers: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # JSON lines for log collectors; "text" for people (the default in development mode).
    log_format: Literal["json", "text"] | None = None

    @property
    def totp_lockout(self) -> LockoutSettings:
        """The per-subject lockout of TOTP and recovery codes (``totp.lockout`` or ``lockout``)."""
        return self.totp.lockout or self.lockout

    @property
    def totp_issuer(self) -> str:
        """The issuer authenticator apps show (``totp.issuer`` or ``sms.app_name``)."""
        return self.totp.issuer or self.sms.app_name

    @property
    def effective_log_format(self) -> Literal["json", "text"]:
        """``log_format``, or text in development mode and JSON otherwise."""
        return self.log_format or ("text" if self.dev_mode else "json")

    code: CodeSettings = CodeSettings()
    ids: IdSettings = IdSettings()
    lockout: LockoutSettings = LockoutSettings()
    totp: TotpSettings = TotpSettings()
    send_limits: SendLimitSettings = SendLimitSettings()
    abuse: AbuseSettings = AbuseSettings()
    analytics: AnalyticsSettings = AnalyticsSettings()
    hashing: HashingSettings = HashingSettings()
    redis: RedisSettings = RedisSettings()
    sms: SmsSettings = SmsSettings()
    outbox: OutboxSettings = OutboxSettings()
    events: EventSettings = EventSettings()
    privacy: PrivacySettings = PrivacySettings()
    # Where providers reach this service (delivery-report callbacks, and the URL Twilio signs).
    public_base_url: HttpsUrl | None = None
    api_tokens: list[ApiToken] = msgspec.field(default_factory=list)
    # Outside --dev only with unsafe.allow_test_numbers.
    test_numbers: Annotated[list[FixedCodeNumber], msgspec.Meta(max_length=20)] = msgspec.field(
        default_factory=list
    )
    unsafe: UnsafeOverrides = UnsafeOverrides()
    secrets: Secrets = Secrets()


class ValidSettings(Settings, frozen=True, kw_only=True):
    """``Settings`` that passed every check; what a runtime is built from.

    Only ``otpservice.validation`` makes them (``load_settings``, ``validate_settings``).
    """

    secrets: RequiredSecrets
