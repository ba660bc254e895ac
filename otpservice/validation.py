"""The settings checks: a table of small named checks that turn ``Settings`` into
``ValidSettings``, and ``load_settings``, which reads the sources and runs them.

The checks sit beside the composition root, not in ``config``: some parse what the providers
and crypto modules own (ACS connection strings, Standard Webhooks secrets, outbox keys, message
templates), and ``config`` sits below those. Add a check by writing a function that raises
``ConfigError`` naming its key and adding a row to ``CHECKS``.
"""

from __future__ import annotations

import ipaddress
import os
import re
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlsplit

import msgspec
import phonenumbers
from argon2 import Type, extract_parameters
from argon2.exceptions import InvalidHashError
from standardwebhooks.webhooks import Webhook

from otpservice.config.schema import (
    MIN_SECRET_BYTES,
    PROVIDER_SECRETS,
    REQUIRED_SECRETS,
    SAFE_MAX_ATTEMPTS,
    SAFE_MAX_LOCKOUT_FAILURES,
    SAFE_MAX_SENDS_PER_DAY,
    SAFE_MAX_SENDS_PER_HOUR,
    SAFE_MAX_TTL_SECONDS,
    SAFE_MIN_DIGITS,
    SAFE_MIN_HASH_MEMORY_KIB,
    SAFE_MIN_LOCKOUT_SECONDS,
    SAFE_MIN_SEND_INTERVAL_SECONDS,
    SENDER_FORM_WORDS,
    AcsProvider,
    ConsoleProvider,
    GenericProvider,
    RequiredSecrets,
    SenderForm,
    Settings,
    TwilioProvider,
    ValidSettings,
)
from otpservice.config.sources import RawSettings, convert_settings, read_sources, with_dev_secrets
from otpservice.crypto.codes import is_well_formed_code
from otpservice.crypto.sealing import decode_key
from otpservice.crypto.strength import weakness
from otpservice.crypto.webhook_signing import check_secret, secret_key
from otpservice.errors import ConfigError, InvalidInput
from otpservice.models import FixedCode
from otpservice.phone import parse_phone
from otpservice.sms.acs import parse_connection_string
from otpservice.sms.templates import MessageTemplates

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping


class Check(NamedTuple):
    """One rule the settings must follow; ``applies`` says in which mode it runs.

    ``reads_secrets``: the rule looks at a secret's value (its form, its length), so
    ``config check --no-secrets`` skips it.
    """

    name: str
    run: Callable[[Settings], None]
    applies: Callable[[Settings], bool] = lambda _: True
    reads_secrets: bool = False


class CheckedWithoutSecrets(NamedTuple):
    """What ``check_without_secrets`` found: the settings (secrets unread, so no runtime
    takes them) and each ``*_file`` key whose file was not read, with its path."""

    settings: Settings
    unread_files: dict[str, str]


def load_settings(
    path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    dev: bool = False,
    overrides: dict[str, Any] | None = None,
) -> ValidSettings:
    """Read the settings from their sources (``config.sources``) and check them.

    ``dev`` fills in what development mode needs (generated secrets, embedded store).
    ``overrides`` (from command-line flags) win over everything.

    Raises:
        ConfigError: naming the key that is missing or invalid, and where its value came from.
    """
    raw = read_sources(
        path, environ=os.environ if environ is None else environ, overrides=overrides
    )
    if dev:
        raw.tree["dev_mode"] = True
        # Development mode always runs on the embedded store.
        raw.tree.setdefault("redis", {})["url"] = None
        raw.tree["redis"]["sentinel"] = None
    settings = convert_settings(raw)
    if settings.dev_mode:
        settings = with_dev_secrets(settings)
    return validate_settings(settings, raw)


def check_without_secrets(
    path: str | Path | None, *, environ: Mapping[str, str] | None = None
) -> CheckedWithoutSecrets:
    """Every check but those of the secrets: for a config whose secret files exist only where
    the service runs (a Kubernetes pod). Their files are not opened, and the checks of a
    secret's value (``Check.reads_secrets``) are skipped; that a required secret is given (as
    a value or a ``*_file``) is still checked.

    Raises:
        ConfigError: naming the key that is missing or invalid, and where its value came from.
    """
    raw = read_sources(path, environ=os.environ if environ is None else environ, files="skip")
    settings = convert_settings(raw)
    _run_checks(settings, raw, with_secrets=False)
    return CheckedWithoutSecrets(settings, raw.unread_files)


def validate_settings(settings: Settings, raw: RawSettings | None = None) -> ValidSettings:
    """Run every check of ``CHECKS`` that applies; the settings as ``ValidSettings``.

    Raises:
        ConfigError: from the first check that fails, with where the value came from when
            ``raw`` (the sources read) knows.
    """
    _run_checks(settings, raw, with_secrets=True)
    secrets = RequiredSecrets(
        **{**msgspec.structs.asdict(settings.secrets), **_required_secrets(settings)}
    )
    fields = msgspec.structs.asdict(settings)
    return ValidSettings(**{**fields, "secrets": secrets})


def _run_checks(settings: Settings, raw: RawSettings | None, *, with_secrets: bool) -> None:
    for check in CHECKS:
        if not check.applies(settings) or (check.reads_secrets and not with_secrets):
            continue
        try:
            check.run(settings)
        except ConfigError as exc:
            origin = raw.origin_of(exc.key) if raw is not None and exc.key else None
            if origin is None:
                raise
            raise ConfigError(f"{exc} (from {origin})", key=exc.key) from exc


def _required_secrets(settings: Settings) -> dict[str, str]:
    values = {name: getattr(settings.secrets, name) for name in REQUIRED_SECRETS}
    missing = [name for name, value in values.items() if not value]
    if missing:  # only where no check required them: a bug in CHECKS
        raise ConfigError(f"secrets.{missing[0]} is not set", key=f"secrets.{missing[0]}")
    return values


def _refuse_unsafe_code(settings: Settings) -> None:
    code, unsafe = settings.code, settings.unsafe
    if code.ttl_seconds > SAFE_MAX_TTL_SECONDS and not unsafe.allow_long_ttl:
        raise ConfigError(
            f"code.ttl_seconds = {code.ttl_seconds} is over {SAFE_MAX_TTL_SECONDS}; "
            "set unsafe.allow_long_ttl = true if you mean it",
            key="code.ttl_seconds",
        )
    if code.max_attempts > SAFE_MAX_ATTEMPTS and not unsafe.allow_many_attempts:
        raise ConfigError(
            f"code.max_attempts = {code.max_attempts} is over {SAFE_MAX_ATTEMPTS}; "
            "set unsafe.allow_many_attempts = true if you mean it",
            key="code.max_attempts",
        )
    if code.digits < SAFE_MIN_DIGITS and not unsafe.allow_short_codes:
        raise ConfigError(
            f"code.digits = {code.digits} is under {SAFE_MIN_DIGITS}; "
            "set unsafe.allow_short_codes = true if you mean it",
            key="code.digits",
        )


def _refuse_weak_limits(settings: Settings) -> None:
    if settings.unsafe.allow_weak_limits:
        return
    sends, memory = settings.send_limits, settings.hashing.memory_kib
    lockouts = [("lockout", settings.lockout)]
    if settings.totp.lockout is not None:
        lockouts.append(("totp.lockout", settings.totp.lockout))
    weakened = (  # key, value, the bound it passes, whether it does
        *(
            check
            for name, lockout in lockouts
            for check in (
                (
                    f"{name}.max_failures",
                    lockout.max_failures,
                    f"over {SAFE_MAX_LOCKOUT_FAILURES}",
                    lockout.max_failures > SAFE_MAX_LOCKOUT_FAILURES,
                ),
                (
                    f"{name}.base_seconds",
                    lockout.base_seconds,
                    f"under {SAFE_MIN_LOCKOUT_SECONDS}",
                    lockout.base_seconds < SAFE_MIN_LOCKOUT_SECONDS,
                ),
            )
        ),
        (
            "send_limits.min_interval_seconds",
            sends.min_interval_seconds,
            f"under {SAFE_MIN_SEND_INTERVAL_SECONDS}",
            sends.min_interval_seconds < SAFE_MIN_SEND_INTERVAL_SECONDS,
        ),
        (
            "send_limits.per_hour",
            sends.per_hour,
            f"over {SAFE_MAX_SENDS_PER_HOUR}",
            sends.per_hour > SAFE_MAX_SENDS_PER_HOUR,
        ),
        (
            "send_limits.per_day",
            sends.per_day,
            f"over {SAFE_MAX_SENDS_PER_DAY}",
            sends.per_day > SAFE_MAX_SENDS_PER_DAY,
        ),
        (
            "hashing.memory_kib",
            memory,
            f"under {SAFE_MIN_HASH_MEMORY_KIB}",
            memory < SAFE_MIN_HASH_MEMORY_KIB,
        ),
    )
    for key, value, bound, passed in weakened:
        if passed:
            raise ConfigError(
                f"{key} = {value} is {bound}, which weakens a protection; "
                "set unsafe.allow_weak_limits = true if you mean it",
                key=key,
            )


def _hashing_memory_fits(settings: Settings) -> None:
    hashing = settings.hashing
    if hashing.memory_kib < 8 * hashing.parallelism:
        raise ConfigError(
            "hashing.memory_kib must be at least 8 * hashing.parallelism", key="hashing.memory_kib"
        )


def _lockout_in_order(settings: Settings) -> None:
    for name, lockout in (("lockout", settings.lockout), ("totp.lockout", settings.totp.lockout)):
        if lockout is not None and lockout.base_seconds > lockout.max_seconds:
            raise ConfigError(
                f"{name}.base_seconds must not exceed {name}.max_seconds",
                key=f"{name}.base_seconds",
            )


def _providers_named_once(settings: Settings) -> None:
    if not settings.sms.providers:
        raise ConfigError("sms.providers is empty: name at least one provider", key="sms.providers")
    names = [provider.label for provider in settings.sms.providers]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(
                f"sms.providers: two providers are named {name!r}; set name", key="sms.providers"
            )


def _providers_complete(settings: Settings) -> None:
    for index, provider in enumerate(settings.sms.providers):
        where = f"sms.providers[{index}]"
        secret_field = PROVIDER_SECRETS.get(provider.kind)
        if secret_field and not getattr(provider, secret_field):
            raise ConfigError(
                f"{where}.{secret_field} is not set (give it as {where}.{secret_field}_file)",
                key=f"{where}.{secret_field}",
            )
        if isinstance(provider, TwilioProvider) and (
            (provider.from_number is None) == (provider.messaging_service_sid is None)
        ):
            raise ConfigError(
                f"{where}: set exactly one of from_number and messaging_service_sid", key=where
            )


def _provider_credentials_parse(settings: Settings) -> None:
    for index, provider in enumerate(settings.sms.providers):
        where = f"sms.providers[{index}]"
        if isinstance(provider, AcsProvider):
            try:
                parse_connection_string(provider.connection_string)
            except ValueError as exc:
                raise ConfigError(
                    f"{where}.connection_string: {exc}", key=f"{where}.connection_string"
                ) from None
        if isinstance(provider, GenericProvider) and provider.secret:
            check_secret(provider.secret, f"{where}.secret")


# A short code is digits only; an alphanumeric sender ID needs a letter (else it reads as a
# number), spaces allowed, at most 11 characters (the GSM sender field).
_SHORT_CODE = re.compile(r"[0-9]{3,8}")
# No space at either end: a carrier would show it, or drop it and make another sender.
_ALPHANUMERIC = re.compile(r"(?=[0-9 ]*[A-Za-z])(?! )[A-Za-z0-9 ]{1,11}(?<! )")


def sender_form(sender: str) -> SenderForm | None:
    """Which kind of sender ``sender`` is: a valid E.164 number (checked with phonenumbers), a
    short code, an alphanumeric sender ID; None when it is none of them."""
    if sender.startswith("+"):
        try:
            parse_phone(sender)
        except InvalidInput:
            return None
        return "phone_number"
    if _SHORT_CODE.fullmatch(sender):
        return "short_code"
    if _ALPHANUMERIC.fullmatch(sender):
        return "alphanumeric"
    return None


def _senders_valid(settings: Settings) -> None:
    for index, provider in enumerate(settings.sms.providers):
        if not isinstance(provider, AcsProvider | TwilioProvider) or provider.from_number is None:
            continue
        sender = provider.from_number
        if sender_form(sender) in provider.sender_forms:
            continue
        accepted = [SENDER_FORM_WORDS[form] for form in provider.sender_forms]
        hint = ""
        if sender.isdigit() and len(sender) > 8:
            hint = " (a phone number starts with '+' and its country code)"
        elif sender.startswith("+") and sender[1:].isdigit():
            hint = " (it has the E.164 form but is not a valid number for its country)"
        raise ConfigError(
            f"sms.providers[{index}].from_number = {sender!r} is not a sender {provider.kind} "
            f"accepts{hint}: use {', '.join(accepted[:-1])}{', or ' if accepted[1:] else ''}"
            f"{accepted[-1]}",
            key=f"sms.providers[{index}].from_number",
        )


def _templates_render(settings: Settings) -> None:
    sms = settings.sms
    if sms.default_locale not in sms.templates:
        raise ConfigError(
            f"sms.default_locale {sms.default_locale!r} has no sms.templates entry",
            key="sms.default_locale",
        )
    MessageTemplates(settings)  # renders every template once: placeholders and length


def _abuse_rules_distinct(settings: Settings) -> None:
    names = [rule.name for rule in settings.abuse.rules]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"abuse.rules: the name {name!r} is used twice", key="abuse.rules")
    for i, rule in enumerate(settings.abuse.rules):
        seconds = [w.seconds for w in rule.windows]
        if len(set(seconds)) != len(seconds):
            raise ConfigError(
                f"abuse.rules[{i}].windows: two windows of the same length",
                key=f"abuse.rules[{i}].windows",
            )


def _geo_countries_known(settings: Settings) -> None:
    geo = settings.abuse.geo
    for where, codes in (
        ("allow_countries", geo.allow_countries),
        ("deny_countries", geo.deny_countries),
    ):
        unknown = [c for c in codes if c not in phonenumbers.SUPPORTED_REGIONS]
        if unknown:
            raise ConfigError(
                f"abuse.geo.{where}: unknown country codes {unknown}", key=f"abuse.geo.{where}"
            )


def _pod_port_distinct(settings: Settings) -> None:
    pod = settings.pod_listener
    if pod is not None and pod.port == settings.port:
        raise ConfigError(
            "pod_listener.port must differ from port (the API's)", key="pod_listener.port"
        )


def _claim_idle_inside_ttl(settings: Settings) -> None:
    outbox = settings.outbox
    if outbox.claim_idle_seconds * 3 > settings.code.ttl_seconds:  # 0 (automatic) passes
        raise ConfigError(
            f"outbox.claim_idle_seconds = {outbox.claim_idle_seconds} is too long for "
            f"code.ttl_seconds = {settings.code.ttl_seconds}: a message taken over that late "
            "could arrive after its code expired; keep it under a third of the TTL",
            key="outbox.claim_idle_seconds",
        )


# The secrets that are AES-256 keys: 32 bytes in base64.
_AES_KEYS = ("outbox_key", "previous_outbox_key", "totp_key", "previous_totp_key")


def _aes_keys_decode(settings: Settings) -> None:
    for name in _AES_KEYS:
        value = getattr(settings.secrets, name)
        if value:
            decode_key(value, f"secrets.{name}")


def _events_signed(settings: Settings) -> None:
    if settings.events.callback_url is not None and not settings.secrets.events_secret:
        raise ConfigError(
            "events.callback_url is set but secrets.events_secret is not (give "
            "secrets.events_secret_file: 'whsec_' + base64 of 24+ random bytes)",
            key="events.callback_url",
        )


def _events_secret_decodes(settings: Settings) -> None:
    secret = settings.secrets.events_secret
    if settings.events.callback_url is None or not secret:
        return
    try:
        Webhook(secret)
    except Exception as exc:  # the package raises what base64 decoding raises
        raise ConfigError(
            f"secrets.events_secret is not a Standard Webhooks secret: {exc}",
            key="secrets.events_secret",
        ) from None


def _dev_single_process(settings: Settings) -> None:
    if settings.workers > 1:
        raise ConfigError(
            "workers: development mode runs one process (its store is in it)", key="workers"
        )


def _dev_on_loopback(settings: Settings) -> None:
    if not _is_loopback(settings.host):
        raise ConfigError(
            f"host = {settings.host!r}: development mode listens on loopback only", key="host"
        )


def _real_redis(settings: Settings) -> None:
    redis = settings.redis
    if redis.sentinel is not None:
        _sentinel_redis(settings)
        return
    if redis.url is None:
        raise ConfigError(
            "redis.url is not set: production needs a real Redis "
            "(use `otpservice serve --dev` for the embedded development store)",
            key="redis.url",
        )
    if not redis.url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(
            "redis.url must start with redis://, rediss:// or unix://", key="redis.url"
        )
    if redis.tls_ca_file is not None:
        if not redis.url.startswith("rediss://"):
            raise ConfigError(
                "redis.tls_ca_file needs a rediss:// redis.url", key="redis.tls_ca_file"
            )
        if not Path(redis.tls_ca_file).is_file():
            raise ConfigError(
                f"redis.tls_ca_file: no such file {redis.tls_ca_file}", key="redis.tls_ca_file"
            )


def _sentinel_redis(settings: Settings) -> None:
    redis = settings.redis
    assert redis.sentinel is not None
    if redis.url is not None:
        raise ConfigError(
            "redis.url and redis.sentinel are both set: with Sentinel the master's address "
            "comes from the sentinels; remove redis.url",
            key="redis.url",
        )
    if redis.cluster:
        raise ConfigError(
            "redis.cluster and redis.sentinel are both set: choose one", key="redis.cluster"
        )
    if redis.tls_ca_file is not None:
        if not redis.sentinel.tls:
            raise ConfigError(
                "redis.tls_ca_file needs redis.sentinel.tls = true", key="redis.tls_ca_file"
            )
        if not Path(redis.tls_ca_file).is_file():
            raise ConfigError(
                f"redis.tls_ca_file: no such file {redis.tls_ca_file}", key="redis.tls_ca_file"
            )
    for node, (_, port) in zip(redis.sentinel.nodes, redis.sentinel.addresses(), strict=True):
        if not 1 <= port <= 65535:
            raise ConfigError(
                f"redis.sentinel.nodes: {node!r} has no valid port (1 to 65535)",
                key="redis.sentinel.nodes",
            )


def _durable_acknowledgements(settings: Settings) -> None:
    redis = settings.redis
    if redis.min_replicas_acked == 0:
        return
    longest = int(redis.socket_timeout_seconds * 1000) - 100
    if not 1 <= redis.wait_timeout_ms <= longest:
        raise ConfigError(
            f"redis.wait_timeout_ms = {redis.wait_timeout_ms}: it must be 1 to {longest} (the "
            "socket timeout less 100 ms), so the WAIT ends before the command's deadline",
            key="redis.wait_timeout_ms",
        )


def _secrets_given(settings: Settings) -> None:
    for name in REQUIRED_SECRETS:
        if not getattr(settings.secrets, name):
            raise ConfigError(
                f"secrets.{name} is not set (give secrets.{name}_file); "
                "use `otpservice serve --dev` for development",
                key=f"secrets.{name}",
            )


def _secrets_long_enough(settings: Settings) -> None:
    for name in ("pepper", "previous_pepper", "index_key", "acs_webhook_secret"):
        value = getattr(settings.secrets, name)
        if value and len(value.encode()) < MIN_SECRET_BYTES:
            raise ConfigError(
                f"secrets.{name} is too short: use at least {MIN_SECRET_BYTES} bytes",
                key=f"secrets.{name}",
            )


# The secrets judged for strength and told apart; the keys among them are judged as the bytes
# their base64 stands for.
_STRENGTH_CHECKED = (
    "pepper",
    "previous_pepper",
    "index_key",
    "outbox_key",
    "previous_outbox_key",
    "totp_key",
    "previous_totp_key",
    "events_secret",
    "acs_webhook_secret",
)


def _secret_material(name: str, value: str) -> tuple[bytes, bool]:
    """What a secret's strength is judged on, and whether those are key bytes."""
    if name in _AES_KEYS:
        return decode_key(value, f"secrets.{name}"), True
    if name == "events_secret":
        return secret_key(value, f"secrets.{name}"), True
    return value.encode(), False


def _secrets_strong_and_distinct(settings: Settings) -> None:
    seen: dict[bytes | str, str] = {}
    for name in _STRENGTH_CHECKED:
        value = getattr(settings.secrets, name)
        if not value:
            continue
        material, binary = _secret_material(name, value)
        why = weakness(material, binary=binary)
        if why is not None:
            raise ConfigError(
                f"secrets.{name} is too weak: {why}; use `otpservice secrets generate` "
                "(or openssl rand -hex 32)",
                key=f"secrets.{name}",
            )
        for form in (value, material):
            if form in seen:
                raise ConfigError(
                    f"secrets.{name} is the same as secrets.{seen[form]}: give each its own",
                    key=f"secrets.{name}",
                )
            seen[form] = name


def _authenticated_bind(settings: Settings) -> None:
    if (
        not _is_loopback(settings.host)
        and not settings.api_tokens
        and not settings.unsafe.allow_unauthenticated_bind
    ):
        raise ConfigError(
            f"host = {settings.host!r} is not loopback and api_tokens is empty: anyone could "
            "call the API; configure api_tokens or set unsafe.allow_unauthenticated_bind = true",
            key="host",
        )


def _https_only(settings: Settings) -> None:
    """Codes, numbers and provider credentials travel only over TLS (loopback excepted).

    The ACS endpoint is inside its connection string, a secret: unread (``NOT_READ``, which
    names no endpoint), it is not checked.
    """
    urls: list[tuple[str, str]] = []
    for index, provider in enumerate(settings.sms.providers):
        where = f"sms.providers[{index}]"
        if isinstance(provider, GenericProvider):
            urls.append((f"{where}.url", provider.url))
        elif isinstance(provider, TwilioProvider):
            urls.append((f"{where}.api_base_url", provider.api_base_url))
        elif isinstance(provider, AcsProvider):
            endpoint = provider.connection_string.lower().partition("endpoint=")[2].split(";")[0]
            urls.append((f"{where}.connection_string", endpoint.strip()))
    if settings.events.callback_url:
        urls.append(("events.callback_url", settings.events.callback_url))
    for where, url in urls:
        parts = urlsplit(url)
        if parts.scheme == "http" and not _is_loopback(parts.hostname or ""):
            raise ConfigError(
                f"{where} is plain http: codes and credentials would cross the network in "
                "clear; use https (or set unsafe.allow_plain_http = true for a trusted network)",
                key=where,
            )


def _no_console_sender(settings: Settings) -> None:
    for index, provider in enumerate(settings.sms.providers):
        if isinstance(provider, ConsoleProvider):
            raise ConfigError(
                f"sms.providers[{index}]: the console provider prints codes to the terminal: "
                "it is for --dev only (set unsafe.allow_console_sender = true for benchmarks)",
                key=f"sms.providers[{index}]",
            )


def _api_tokens_distinct(settings: Settings) -> None:
    seen: dict[str, int] = {}
    scopes_of: dict[str, tuple[int, list[str]]] = {}
    for index, token in enumerate(settings.api_tokens):
        where = f"api_tokens[{index}]"
        if token.token_sha256 in seen:
            raise ConfigError(
                f"{where}.token_sha256 is the same token as api_tokens[{seen[token.token_sha256]}]"
                ": one token, one client and one set of scopes",
                key=f"{where}.token_sha256",
            )
        seen[token.token_sha256] = index
        scopes: list[str] = sorted(set(token.scopes))
        first, first_scopes = scopes_of.setdefault(token.client, (index, scopes))
        if scopes != first_scopes:
            # Several tokens for one client are a rotation: the new one must do what the old did.
            raise ConfigError(
                f"{where}.scopes ({', '.join(scopes)}) differ from api_tokens[{first}].scopes "
                f"({', '.join(first_scopes)}) for the same client {token.client!r}: a client's "
                "tokens (during a rotation) have the same scopes",
                key=f"{where}.scopes",
            )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# How far ahead a test number may be set to expire.
TEST_NUMBER_MAX_DAYS = 90


def fixed_codes_of(settings: Settings, *, today: date | None = None) -> dict[str, FixedCode]:
    """Each test number's fixed code, read and checked (``code_file`` read here).

    Raises:
        ConfigError: naming the entry's key: expired, more than 90 days ahead, no code or two,
            a code of the wrong length, a PHC string that is not argon2id, a number that is
            not one; or test numbers outside --dev without ``unsafe.allow_test_numbers``.
    """
    entries = settings.test_numbers
    if entries and not settings.dev_mode and not settings.unsafe.allow_test_numbers:
        raise ConfigError(
            "test_numbers work without an SMS: outside --dev they need "
            "unsafe.allow_test_numbers = true",
            key="test_numbers",
        )
    today = today or date.today()
    digits = settings.code.digits
    codes: dict[str, FixedCode] = {}
    for index, entry in enumerate(entries):
        where = f"test_numbers[{index}]"
        if entry.expires_on < today:
            raise ConfigError(f"{where}.expires_on: {entry.expires_on} has passed", key=where)
        if (entry.expires_on - today).days > TEST_NUMBER_MAX_DAYS:
            raise ConfigError(
                f"{where}.expires_on: at most {TEST_NUMBER_MAX_DAYS} days ahead", key=where
            )
        try:
            e164 = parse_phone(entry.phone).e164
        except InvalidInput as exc:
            raise ConfigError(f"{where}.phone: {exc.detail}", key=f"{where}.phone") from None
        if e164 in codes:
            raise ConfigError(f"{where}.phone: the number is listed twice", key=f"{where}.phone")
        if (entry.code_file is None) == (entry.code_argon2 is None):
            raise ConfigError(f"{where}: give code_file or code_argon2, not both", key=where)
        if entry.code_file is not None:
            try:
                code = Path(entry.code_file).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(
                    f"{where}.code_file: cannot read {entry.code_file}: {exc.strerror}",
                    key=f"{where}.code_file",
                ) from None
            if not is_well_formed_code(code, digits):
                raise ConfigError(
                    f"{where}.code_file: the code must be {digits} digits (code.digits)",
                    key=f"{where}.code_file",
                )
            codes[e164] = FixedCode(expires_on=entry.expires_on, code=code)
        else:
            phc = entry.code_argon2 or ""
            try:
                if extract_parameters(phc).type is not Type.ID:
                    raise InvalidHashError
            except (InvalidHashError, ValueError):
                raise ConfigError(
                    f"{where}.code_argon2: not an argon2id PHC string ($argon2id$...)",
                    key=f"{where}.code_argon2",
                ) from None
            codes[e164] = FixedCode(expires_on=entry.expires_on, phc=phc)
    return codes


def _test_numbers_valid(settings: Settings) -> None:
    fixed_codes_of(settings)


def _in_dev(settings: Settings) -> bool:
    return settings.dev_mode


def _in_production(settings: Settings) -> bool:
    return not settings.dev_mode


# In order: the first that fails is the error reported.
CHECKS: tuple[Check, ...] = (
    Check("unsafe code settings need an override", _refuse_unsafe_code),
    Check("weakened limits need an override", _refuse_weak_limits),
    Check("argon2 memory fits its lanes", _hashing_memory_fits),
    Check("lockout durations in order", _lockout_in_order),
    Check("providers named once", _providers_named_once),
    Check("providers complete", _providers_complete),
    Check("provider credentials parse", _provider_credentials_parse, reads_secrets=True),
    Check("senders are numbers, short codes or sender IDs", _senders_valid),
    Check("templates render", _templates_render),
    Check("abuse rules distinct", _abuse_rules_distinct),
    Check("geo countries known", _geo_countries_known),
    Check("pod listener on its own port", _pod_port_distinct),
    Check("outbox take-over inside the code's lifetime", _claim_idle_inside_ttl),
    Check("outbox and TOTP keys decode", _aes_keys_decode, reads_secrets=True),
    Check("events signed", _events_signed),
    Check("events secret decodes", _events_secret_decodes, reads_secrets=True),
    Check("test numbers current and well formed", _test_numbers_valid, reads_secrets=True),
    Check("development mode: one process", _dev_single_process, _in_dev),
    Check("development mode: loopback only", _dev_on_loopback, _in_dev),
    Check("production: a real Redis", _real_redis, _in_production),
    Check("durable acknowledgements", _durable_acknowledgements, _in_production),
    Check("production: secrets given", _secrets_given, _in_production),
    Check("secrets long enough", _secrets_long_enough, _in_production, reads_secrets=True),
    Check(
        "secrets strong and distinct",
        _secrets_strong_and_distinct,
        _in_production,
        reads_secrets=True,
    ),
    Check("production: no unauthenticated bind", _authenticated_bind, _in_production),
    Check("API tokens distinct, a client's tokens alike", _api_tokens_distinct),
    Check(
        "production: https only",
        _https_only,
        lambda settings: _in_production(settings) and not settings.unsafe.allow_plain_http,
    ),
    Check(
        "production: no console sender",
        _no_console_sender,
        lambda settings: _in_production(settings) and not settings.unsafe.allow_console_sender,
    ),
)
