from __future__ import annotations

import base64
import re
import secrets
from pathlib import Path

import pytest

from otpservice.cli import main
from otpservice.cli.secrets import GENERATED
from otpservice.cli.tables import limits_table
from otpservice.errors import ConfigError
from otpservice.validation import load_settings

SECRET = "Z4QpYzUfB6skYlh4ZD7WxyHZyX-jp3Sh"
OUTBOX_KEY = "b3V0Ym94LWtleS1mb3ItdGVzdHMtMDEyMzQ1Njc4OWE="
GOOD = f"""
[redis]
url = "rediss://:pw@redis.example:6380/0"

[secrets]
pepper = "{SECRET}"
index_key = "{SECRET}i"
outbox_key = "{OUTBOX_KEY}"

[code]
ttl_seconds = 120

[unsafe]
allow_console_sender = true  # the only sender until real providers land
"""


ACS = """
[[sms.providers]]
type = "acs"
connection_string = "endpoint=https://acs.example/;accesskey=a2V5"
from_number = "+18005550100"
"""
TWILIO = f"""
[[sms.providers]]
type = "twilio"
account_sid = "AC{"0" * 32}"
auth_token = "token"
from_number = "+15005550006"
"""


def write(tmp_path: Path, text: str, name: str = "otp.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    settings = load_settings(
        path,
        environ={"OTP_CODE__MAX_ATTEMPTS": "3", "OTP_SEND_LIMITS__PER_DAY": "7"},
        overrides={"port": 9000},
    )
    assert settings.code.ttl_seconds == 120
    assert settings.code.max_attempts == 3
    assert settings.send_limits.per_day == 7
    assert settings.port == 9000
    assert settings.redis.url == "rediss://:pw@redis.example:6380/0"


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    assert load_settings(environ={"OTP_CONFIG": str(path)}).code.ttl_seconds == 120


def test_secrets_from_files_never_printed(tmp_path: Path) -> None:
    (tmp_path / "pepper").write_text("pepper-from-a-mounted-secret\n")
    (tmp_path / "redis-password").write_text("hunter2hunter2")
    path = write(
        tmp_path,
        GOOD.replace(f'pepper = "{SECRET}"', f'pepper_file = "{tmp_path / "pepper"}"'),
    )
    settings = load_settings(
        path, environ={"OTP_SECRETS__REDIS_PASSWORD_FILE": str(tmp_path / "redis-password")}
    )
    assert settings.secrets.pepper == "pepper-from-a-mounted-secret"
    assert settings.secrets.redis_password == "hunter2hunter2"
    for text in (repr(settings), str(settings)):
        assert "pepper-from-a-mounted-secret" not in text
        assert "hunter2" not in text


@pytest.mark.parametrize(
    ("text", "environ", "named"),
    [
        (GOOD + "\n[lockout]\nmax_failures = 'many'\n", {}, "lockout.max_failures"),
        (GOOD, {"OTP_CODE__TTL_SECONDS": "soon"}, "code.ttl_seconds"),
        (GOOD + "\n[hashing]\nmemory = 1\n", {}, "memory"),
        (GOOD, {"OTP_CODE__DIGITS": "12"}, "code.digits"),
        (GOOD, {"OTP_SECRETS__PEPPER_FILE": "/nonexistent/pepper"}, "secrets.pepper_file"),
        (GOOD.replace("rediss://", "http://"), {}, "redis.url"),
        (GOOD.replace(SECRET, "short"), {}, "secrets.pepper"),
        ('[redis]\nurl = "redis://x"\n[secrets]\nindex_key = "' + SECRET + '"\n', {}, "--dev"),
        ("", {}, "--dev"),
        (GOOD + '\n[sms.templates]\nen = "Code {code} for {user}"\n', {}, "sms.templates.en"),
        (
            GOOD + '\n[sms]\ntemplate = "{code}"\n',
            {},
            "sms: Object contains unknown field `template`",
        ),
        (
            GOOD + ACS.replace('from_number = "+18005550100"', ""),
            {},
            "sms.providers[0]: Object missing required field `from_number`",
        ),
        (
            GOOD + ACS.replace("accesskey=a2V5", "key=a2V5"),
            {},
            "sms.providers[0].connection_string",
        ),
        (
            GOOD + ACS.replace("connection_string =", "#"),
            {},
            "sms.providers[0].connection_string_file",
        ),
        (GOOD + ACS.replace('type = "acs"', 'type = "carrier-pigeon"'), {}, "sms.providers[0]"),
        (
            GOOD + TWILIO + 'messaging_service_sid = "MG' + "a" * 32 + '"\n',
            {},
            "sms.providers[0]: set exactly one of from_number and messaging_service_sid",
        ),
        (GOOD + TWILIO.replace("AC", "XX"), {}, "sms.providers[0].account_sid"),
        (
            GOOD + '\n[[abuse.rules]]\nname = "a"\nscope = "ip"\nwindows = []\n',
            {},
            "abuse.rules[0].windows",
        ),
        (
            GOOD + '\n[[abuse.rules]]\nname = "a"\nscope = "planet"\n'
            "windows = [{limit = 1, seconds = 60}]\n",
            {},
            "abuse.rules[0].scope",
        ),
        (
            GOOD
            + '\n[[abuse.rules]]\nname = "a"\nscope = "ip"\nwindows = [{limit = 1, seconds = 60}]'
            '\n[[abuse.rules]]\nname = "a"\nscope = "global"\n'
            "windows = [{limit = 1, seconds = 60}]\n",
            {},
            "abuse.rules: the name 'a' is used twice",
        ),
        (GOOD + '\n[abuse.geo]\ndeny_countries = ["XX"]\n', {}, "abuse.geo.deny_countries"),
        (GOOD + "\n[abuse.fraud_guard]\nfloor = 2\n", {}, "abuse.fraud_guard.floor"),
        (GOOD + "\n[pod_listener]\nport = 8080\n", {}, "pod_listener.port must differ"),
    ],
)
def test_invalid_settings_are_refused_naming_the_key(
    tmp_path: Path, text: str, environ: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text), environ=environ)
    assert named in str(caught.value)


@pytest.mark.parametrize(
    ("setting", "override"),
    [
        ("[code]\nttl_seconds = 900", "allow_long_ttl"),
        ("[code]\nmax_attempts = 11", "allow_many_attempts"),
        ("[code]\ndigits = 4", "allow_short_codes"),
    ],
)
def test_unsafe_settings_need_an_explicit_override(
    tmp_path: Path, setting: str, override: str
) -> None:
    path = write(tmp_path, GOOD.replace("[code]\nttl_seconds = 120\n", setting + "\n"))
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert override in str(caught.value)
    load_settings(path, environ={f"OTP_UNSAFE__{override.upper()}": "true"})


def test_non_loopback_bind_without_tokens_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    with pytest.raises(ConfigError, match="api_tokens"):
        load_settings(path, environ={"OTP_HOST": "0.0.0.0"})
    tokens = '[{"client": "login", "token_sha256": "' + "a" * 64 + '", "scopes": ["otp"]}]'
    settings = load_settings(path, environ={"OTP_HOST": "0.0.0.0", "OTP_API_TOKENS": tokens})
    assert settings.api_tokens[0].client == "login"
    load_settings(
        path, environ={"OTP_HOST": "0.0.0.0", "OTP_UNSAFE__ALLOW_UNAUTHENTICATED_BIND": "true"}
    )


@pytest.mark.parametrize(
    ("pepper", "why"),
    [
        ("s" * 32, "distinct symbols"),
        ("correcthorsebattery", "under 128"),
        ("abcdefgh" * 4 + "a" * 12, "makes up"),
        ("0123456789abcdef", "under 128"),
    ],
)
def test_a_weak_secret_is_refused_saying_why(tmp_path: Path, pepper: str, why: str) -> None:
    text = GOOD.replace(f'pepper = "{SECRET}"', f'pepper = "{pepper}"')
    with pytest.raises(ConfigError, match=rf"secrets\.pepper is too weak: .*{why}"):
        load_settings(write(tmp_path, text), environ={})


def test_an_all_zero_outbox_key_is_refused(tmp_path: Path) -> None:
    zeros = base64.b64encode(bytes(32)).decode()
    with pytest.raises(ConfigError, match=r"secrets\.outbox_key is too weak: it is all zero"):
        load_settings(write(tmp_path, GOOD.replace(OUTBOX_KEY, zeros)), environ={})


@pytest.mark.parametrize("events_secret", ["whsec_" + "A" * 33, "whsec_not base64 at all!"])
def test_an_events_secret_that_does_not_decode_is_refused_naming_it(
    tmp_path: Path, events_secret: str
) -> None:
    # No events.callback_url, so nothing else reads it: the strength check still must not
    # crash on it (a length of 1 mod 4 used to raise binascii.Error, a traceback at start-up).
    environ = {"OTP_SECRETS__EVENTS_SECRET": events_secret}
    with pytest.raises(ConfigError, match=r"secrets\.events_secret must be 'whsec_'") as raised:
        load_settings(write(tmp_path, GOOD), environ=environ)
    assert raised.value.key == "secrets.events_secret"


@pytest.mark.parametrize("name", ["totp_key", "previous_totp_key"])
def test_a_totp_key_that_is_no_aes_key_is_refused_naming_it(tmp_path: Path, name: str) -> None:
    environ = {f"OTP_SECRETS__{name.upper()}": "not-32-bytes"}
    with pytest.raises(ConfigError, match=rf"secrets\.{name} must be 32 random bytes") as raised:
        load_settings(write(tmp_path, GOOD), environ=environ)
    assert raised.value.key == f"secrets.{name}"


@pytest.mark.parametrize("attempt", range(20))
def test_generated_secrets_pass(tmp_path: Path, attempt: int) -> None:
    # What the docs tell operators to use: openssl rand -hex 32 (its alphabet), and every
    # secret `secrets generate` writes, tried twenty times over.
    made = {generated.name: generated.make() for generated in GENERATED}
    pepper = secrets.token_hex(32)
    environ = {
        f"OTP_SECRETS__{name.upper()}": value
        for name, value in made.items()
        if name not in ("pepper", "redis_password", "redis_sentinel_password")
    }
    text = GOOD.replace(SECRET, pepper, 1)
    settings = load_settings(write(tmp_path, text), environ=environ)
    assert (settings.secrets.pepper, settings.secrets.events_secret) == (
        pepper,
        made["events_secret"],
    )


def test_one_secret_used_twice_is_refused_naming_both(tmp_path: Path) -> None:
    text = GOOD.replace(f'index_key = "{SECRET}i"', f'index_key = "{SECRET}"')
    with pytest.raises(ConfigError, match=r"secrets\.index_key is the same as secrets\.pepper"):
        load_settings(write(tmp_path, text), environ={})


@pytest.mark.parametrize(
    ("section", "key", "safe", "weak"),
    [
        ("lockout", "max_failures", 20, 21),
        ("lockout", "base_seconds", 300, 299),
        ("totp.lockout", "max_failures", 20, 21),
        ("totp.lockout", "base_seconds", 300, 299),
        ("send_limits", "min_interval_seconds", 10, 9),
        ("send_limits", "per_hour", 20, 21),
        ("send_limits", "per_day", 50, 51),
        ("hashing", "memory_kib", 8192, 8191),
    ],
)
def test_a_weakened_protection_needs_an_acknowledgement(
    tmp_path: Path, section: str, key: str, safe: int, weak: int
) -> None:
    def config(value: int) -> Path:
        extra = {"lockout": "max_seconds = 86400\n"}.get(section, "")
        return write(tmp_path, f"{GOOD}\n[{section}]\n{key} = {value}\n{extra}")

    load_settings(config(safe), environ={})  # the threshold itself is fine
    with pytest.raises(ConfigError, match=rf"{section}\.{key} = {weak} .*allow_weak_limits"):
        load_settings(config(weak), environ={})
    load_settings(config(weak), environ={"OTP_UNSAFE__ALLOW_WEAK_LIMITS": "true"})


def tokens_toml(*entries: tuple[str, str, list[str]]) -> str:
    """``[[api_tokens]]`` tables of (client, token digest, scopes)."""
    return "".join(
        f'[[api_tokens]]\nclient = "{client}"\ntoken_sha256 = "{digest}"\nscopes = {scopes!r}\n'
        for client, digest, scopes in entries
    ).replace("'", '"')


def test_one_token_twice_is_refused_naming_both_entries(tmp_path: Path) -> None:
    # The last entry used to win: a token meant for "otp" was served with "admin".
    text = tokens_toml(("login", "a" * 64, ["otp"]), ("ops", "a" * 64, ["admin"]))
    with pytest.raises(ConfigError, match=r"api_tokens\[1\].token_sha256.*api_tokens\[0\]"):
        load_settings(write(tmp_path, text + GOOD), environ={})


def test_a_clients_tokens_rotate_only_with_the_same_scopes(tmp_path: Path) -> None:
    rotating = tokens_toml(("login", "a" * 64, ["otp"]), ("login", "b" * 64, ["otp"]))
    settings = load_settings(write(tmp_path, rotating + GOOD), environ={})
    assert [t.client for t in settings.api_tokens] == ["login", "login"]
    widened = tokens_toml(("login", "a" * 64, ["otp"]), ("login", "b" * 64, ["otp", "admin"]))
    with pytest.raises(ConfigError, match=r"api_tokens\[1\].scopes.*api_tokens\[0\]"):
        load_settings(write(tmp_path, widened + GOOD), environ={})


@pytest.mark.parametrize(
    ("text", "environ"),
    [(GOOD, {"OTP_DEV_MODE": "true"}), ("dev_mode = true\n" + GOOD, {})],
)
def test_development_mode_cannot_be_switched_on_by_file_or_environment(
    tmp_path: Path, text: str, environ: dict[str, str]
) -> None:
    with pytest.raises(ConfigError, match="--dev"):
        load_settings(write(tmp_path, text), environ=environ)


def test_console_sender_is_refused_outside_development_mode(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("allow_console_sender = true", ""))
    with pytest.raises(ConfigError, match=r"sms\.providers\[0\]: the console provider"):
        load_settings(path, environ={})


def test_provider_secrets_come_from_files_and_are_never_printed(tmp_path: Path) -> None:
    (tmp_path / "acs").write_text("endpoint=https://acs.example/;accesskey=c2VjcmV0LWtleQ==\n")
    (tmp_path / "twilio").write_text("twilio-auth-token-from-a-file")
    text = (
        GOOD
        + ACS.replace(
            'connection_string = "endpoint=https://acs.example/;accesskey=a2V5"',
            f'connection_string_file = "{tmp_path / "acs"}"',
        )
        + TWILIO.replace('auth_token = "token"', f'auth_token_file = "{tmp_path / "twilio"}"')
    )
    settings = load_settings(write(tmp_path, text), environ={})
    acs, twilio = settings.sms.providers
    assert acs.connection_string.endswith("accesskey=c2VjcmV0LWtleQ==")  # type: ignore[union-attr]
    assert twilio.auth_token == "twilio-auth-token-from-a-file"  # type: ignore[union-attr]
    shown = repr(settings) + str(settings.sms)
    assert "c2VjcmV0LWtleQ" not in shown
    assert "twilio-auth-token" not in shown


def test_two_providers_of_one_type_need_names(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="two providers are named 'acs'"):
        load_settings(write(tmp_path, GOOD + ACS + ACS), environ={})
    named = GOOD + ACS + ACS.replace('type = "acs"', 'type = "acs"\nname = "acs-backup"')
    assert [p.label for p in load_settings(write(tmp_path, named), environ={}).sms.providers] == [
        "acs",
        "acs-backup",
    ]


def test_development_mode_needs_nothing_and_stays_on_loopback() -> None:
    settings = load_settings(environ={"OTP_REDIS__URL": "redis://10.0.0.9:6379/0"}, dev=True)
    assert settings.redis.url is None  # always the embedded store
    assert settings.secrets.pepper
    assert settings.secrets.index_key
    with pytest.raises(ConfigError, match="loopback"):
        load_settings(environ={}, dev=True, overrides={"host": "0.0.0.0"})


def test_config_check_prints_effective_limits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, GOOD)
    assert main(["config", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "valid" in out
    assert re.search(r"^code\.ttl_seconds +120$", out, re.MULTILINE)
    assert SECRET not in out
    table = limits_table(load_settings(path, environ={}))
    assert "send_limits.per_hour" in table
    # The abuse rules as a table: one line per rule with its windows and mode.
    assert "per_ip         ip                          10/1h, 20/1d" in table
    assert "fraud_guard    country, prefix (2 digits)" in table


def test_config_check_reports_a_bad_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, GOOD.replace("ttl_seconds = 120", "ttl_seconds = 120\nbogus = 1"))
    assert main(["config", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "configuration error" in err
    assert "code" in err
    assert "bogus" in err


def test_missing_store_is_reported_before_the_console_sender(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"redis\.url"):
        load_settings(write(tmp_path, ""), environ={})


GATEWAY = """
[[sms.providers]]
type = "generic"
url = "http://sms-gateway.example/send"
secret = "whsec_Z2F0ZXdheS10ZXN0LXNlY3JldC0wMTIzNDU2Nzg5YWI="
"""


def test_codes_and_credentials_never_go_over_plain_http_off_loopback(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"sms\.providers\[0\]\.url is plain http"):
        load_settings(write(tmp_path, GOOD + GATEWAY), environ={})
    local = GATEWAY.replace("sms-gateway.example", "127.0.0.1:9000")
    assert load_settings(write(tmp_path, GOOD + local), environ={})
    acknowledged = GOOD.replace("[unsafe]", "[unsafe]\nallow_plain_http = true") + GATEWAY
    assert load_settings(write(tmp_path, acknowledged), environ={})


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (
            GATEWAY.replace("http://", "https://").replace("Z2F0ZXdheS10ZXN0", ""),
            "sms.providers[0].secret",
        ),
        ('\n[events]\ncallback_url = "https://app.example/otp"\n', "secrets.events_secret"),
    ],
)
def test_weak_or_missing_webhook_secrets_are_refused(
    tmp_path: Path, extra: str, named: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(named)):
        load_settings(write(tmp_path, GOOD + extra), environ={})


def test_a_short_event_grid_secret_is_refused(tmp_path: Path) -> None:
    text = GOOD.replace('index_key = "', 'acs_webhook_secret = "short"\nindex_key = "')
    with pytest.raises(ConfigError, match=r"secrets\.acs_webhook_secret is too short"):
        load_settings(write(tmp_path, text), environ={})


def test_an_error_says_where_the_bad_value_came_from(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + "\n[hashing]\nmemory_kib = 'lots'\n")
    with pytest.raises(ConfigError, match=r"hashing\.memory_kib") as in_file:
        load_settings(path, environ={})
    assert f"(from {path})" in str(in_file.value)
    with pytest.raises(ConfigError, match=r"code\.digits = 4 is under 6") as in_env:
        load_settings(write(tmp_path, GOOD), environ={"OTP_CODE__DIGITS": "4"})
    assert "(from OTP_CODE__DIGITS)" in str(in_env.value)
    tokens = '[{"client": "app", "token_sha256": "xyz"}]'
    with pytest.raises(ConfigError, match=r"api_tokens\[0\]\.token_sha256") as in_json:
        load_settings(write(tmp_path, GOOD), environ={"OTP_API_TOKENS": tokens})
    assert "(from OTP_API_TOKENS)" in str(in_json.value)
    pepper = tmp_path / "pepper"
    pepper.write_text("short\n")
    text = GOOD.replace(f'pepper = "{SECRET}"', f'pepper_file = "{pepper}"')
    with pytest.raises(ConfigError, match=r"secrets\.pepper is too short") as in_secret:
        load_settings(write(tmp_path, text), environ={})
    assert f"(from the file {pepper} named by {tmp_path / 'otp.toml'})" in str(in_secret.value)


def test_a_runtime_takes_only_checked_settings(tmp_path: Path) -> None:
    from redis.asyncio import Redis

    from otpservice.config.schema import RequiredSecrets, ValidSettings
    from otpservice.config.sources import convert_settings
    from otpservice.runtime import Runtime

    unchecked = convert_settings({"redis": {"url": "redis://127.0.0.1:1"}})
    assert not isinstance(unchecked, ValidSettings)
    with pytest.raises(TypeError, match="ValidSettings"):
        Runtime(unchecked, Redis())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="pepper"):
        RequiredSecrets()  # type: ignore[call-arg]
    checked = load_settings(write(tmp_path, GOOD), environ={})
    assert isinstance(checked, ValidSettings)
    assert checked.secrets.pepper == SECRET


def test_only_values_given_are_blamed_on_their_source(tmp_path: Path) -> None:
    # An empty [secrets] table sets nothing: the missing pepper is not the file's doing.
    text = GOOD.replace(f'pepper = "{SECRET}"\nindex_key = "{SECRET}i"\n', "").replace(
        f'outbox_key = "{OUTBOX_KEY}"\n', ""
    )
    assert "[secrets]\n\n" in text
    with pytest.raises(ConfigError, match=r"secrets\.pepper is not set") as missing:
        load_settings(write(tmp_path, text), environ={})
    assert "(from" not in str(missing.value)
    # A key that merely ends in "]" is a key, not a list index.
    odd = GOOD + '\n[sms.templates]\nen = "{code} is your code"\n"x]" = "{code}"\n'
    assert load_settings(write(tmp_path, odd), environ={}).sms.templates["x]"] == "{code}"


def test_version_comes_from_the_installed_metadata(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib import metadata

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"otpservice {metadata.version('otpservice')}\n"


def provider_with_sender(kind: str, sender: str) -> str:
    provider = ACS if kind == "acs" else TWILIO
    return GOOD + re.sub(r'from_number = "[^"]*"', f'from_number = "{sender}"', provider)


@pytest.mark.parametrize("kind", ["acs", "twilio"])
@pytest.mark.parametrize(
    "sender",
    ["+18005550100", "+447911123456", "12345", "262966", "hello", "Example Co", "ACME2"],
)
def test_a_sender_is_a_number_a_short_code_or_an_alphanumeric_id(
    tmp_path: Path, kind: str, sender: str
) -> None:
    settings = load_settings(write(tmp_path, provider_with_sender(kind, sender)), environ={})
    assert settings.sms.providers[0].from_number == sender  # type: ignore[union-attr]


@pytest.mark.parametrize("kind", ["acs", "twilio"])
@pytest.mark.parametrize(
    "sender",
    [
        "+1 555 hello",  # neither a number nor a sender ID
        "12",  # too short for a short code, no letter for a sender ID
        "+99912345",  # no such country code
        "+15551234567",  # 555 numbers are not valid numbers
        "14155550100",  # a number without its '+'
        "Example Company",  # longer than 11 characters
        "ACME-2",  # a character a sender ID cannot have
        " ACME",  # a space at either end would be shown, or dropped
        "",
    ],
)
def test_a_sender_of_no_accepted_form_is_refused_in_words(
    tmp_path: Path, kind: str, sender: str
) -> None:
    path = write(tmp_path, provider_with_sender(kind, sender))
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    message = str(caught.value)
    assert f"sms.providers[0].from_number = {sender!r} is not a sender {kind} accepts" in message
    assert "a phone number in E.164 form" in message
    assert "a short code of 3 to 8 digits" in message
    assert "an alphanumeric sender ID of 1 to 11 letters, digits and spaces" in message
    assert f"(from {path})" in message
    if sender == "14155550100":
        assert "starts with '+'" in message
    if sender == "+15551234567":
        assert "not a valid number for its country" in message


@pytest.mark.parametrize(
    ("text", "environ", "key", "words"),
    [
        (
            GOOD.replace("[redis]\n", '[redis]\nkey_prefix = "my prefix"\n'),
            {},
            "redis.key_prefix",
            "1 to 32 letters, digits, '_', '.' or '-'",
        ),
        (
            GOOD,
            {"OTP_API_TOKENS": '[{"client": "app", "token_sha256": "ABC"}]'},
            "api_tokens[0].token_sha256",
            "the SHA-256 of the token: 64 lowercase hexadecimal digits",
        ),
        (
            GOOD + TWILIO.replace("AC", "AC-"),
            {},
            "sms.providers[0].account_sid",
            "'AC' and 32 hexadecimal digits",
        ),
        (
            GOOD + '\n[abuse.safe_list]\nnumbers = ["+44 7700 900123"]\n',
            {},
            "abuse.safe_list.numbers[0]",
            "a phone number in E.164 form",
        ),
        (
            GOOD + '\n[abuse.geo]\nallow_countries = ["gb"]\n',
            {},
            "abuse.geo.allow_countries[0]",
            "a two-letter ISO 3166 country code in capitals",
        ),
    ],
)
def test_a_value_of_the_wrong_form_is_explained_in_words_not_a_regex(
    tmp_path: Path, text: str, environ: dict[str, str], key: str, words: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ=environ)
    message = str(caught.value)
    assert f"invalid setting {key}: Expected {words}" in message
    assert "regex" not in message
    assert "\\Z" not in message
    source = next(iter(environ), str(path))
    assert f"(from {source})" in message


def test_every_pattern_in_the_schema_has_words() -> None:
    import msgspec

    from otpservice.config.schema import PATTERN_WORDS, Settings

    def patterns(node: object) -> list[str]:
        if isinstance(node, dict):
            found = [node["pattern"]] if isinstance(node.get("pattern"), str) else []
            return found + [p for value in node.values() for p in patterns(value)]
        if isinstance(node, list):
            return [p for value in node for p in patterns(value)]
        return []

    schema = msgspec.json.schema(Settings)
    assert patterns(schema)
    assert set(patterns(schema)) <= set(PATTERN_WORDS)


def test_without_secrets_their_files_are_not_read_nor_their_values_checked(
    tmp_path: Path,
) -> None:
    from otpservice.validation import check_without_secrets

    text = (
        GOOD.replace(
            f'outbox_key = "{OUTBOX_KEY}"', 'outbox_key_file = "/nonexistent/outbox-key"'
        ).replace(f'pepper = "{SECRET}"', 'pepper = "short"')  # too short: a value check
    ) + ACS.replace(
        'connection_string = "endpoint=https://acs.example/;accesskey=a2V5"',
        'connection_string_file = "/nonexistent/acs"',
    )
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=r"secrets\.outbox_key_file: cannot read"):
        load_settings(path, environ={})
    checked = check_without_secrets(path, environ={})
    assert checked.unread_files == {
        "secrets.outbox_key_file": "/nonexistent/outbox-key",
        "sms.providers[0].connection_string_file": "/nonexistent/acs",
    }
    # Not ValidSettings: no runtime takes settings whose secrets were not read.
    from otpservice.config.schema import ValidSettings

    assert not isinstance(checked.settings, ValidSettings)
    # Everything else is checked as ever.
    with pytest.raises(ConfigError, match=r"code\.digits = 4 is under 6"):
        check_without_secrets(path, environ={"OTP_CODE__DIGITS": "4"})


def test_config_check_without_secrets_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = GOOD.replace(f'pepper = "{SECRET}"', 'pepper_file = "/nonexistent/pepper"')
    path = write(tmp_path, text)
    assert main(["config", "check", str(path)]) == 2
    assert "secrets.pepper_file: cannot read /nonexistent/pepper" in capsys.readouterr().err
    assert main(["config", "check", "--no-secrets", str(path)]) == 0
    out = capsys.readouterr().out
    assert "they were not checked (--no-secrets)" in out
    assert "not read: secrets.pepper_file = /nonexistent/pepper" in out
    assert SECRET not in out


SENTINEL = GOOD.replace(
    'url = "rediss://:pw@redis.example:6380/0"',
    'sentinel = { master_name = "otp", nodes = ["s-0.redis:26379", "s-1.redis:26379"] }',
)


def test_sentinel_is_the_masters_address_and_its_password_a_secret(tmp_path: Path) -> None:
    (tmp_path / "sentinel-password").write_text("sentinel-secret\n")
    path = write(tmp_path, SENTINEL)
    environ = {"OTP_SECRETS__REDIS_SENTINEL_PASSWORD_FILE": str(tmp_path / "sentinel-password")}
    settings = load_settings(path, environ=environ)
    assert settings.redis.url is None
    assert settings.redis.sentinel is not None
    assert settings.redis.sentinel.addresses() == [("s-0.redis", 26379), ("s-1.redis", 26379)]
    assert settings.secrets.redis_sentinel_password == "sentinel-secret"
    assert "sentinel-secret" not in repr(settings.secrets)


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        (
            SENTINEL.replace("[redis]\n", '[redis]\nurl = "redis://redis.example:6379/0"\n'),
            "redis.url",
            "remove redis.url",
        ),
        (SENTINEL.replace("[redis]\n", "[redis]\ncluster = true\n"), "redis.cluster", "choose one"),
        (
            SENTINEL.replace('"s-1.redis:26379"', '"s-1.redis"'),
            "redis.sentinel.nodes",
            "host:port, such as",
        ),
        (
            SENTINEL.replace('"s-1.redis:26379"', '"s-1.redis:99999"'),
            "redis.sentinel.nodes",
            "no valid port",
        ),
    ],
)
def test_a_sentinel_setting_that_cannot_work_is_refused_naming_its_key(
    tmp_path: Path, text: str, key: str, words: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text), environ={})
    assert key in str(caught.value)
    assert words in str(caught.value)


def test_durable_acknowledgements_are_taken_on_a_cluster_too(tmp_path: Path) -> None:
    text = GOOD.replace("[redis]\n", "[redis]\ncluster = true\nmin_replicas_acked = 1\n")
    assert load_settings(write(tmp_path, text), environ={}).redis.min_replicas_acked == 1


@pytest.mark.parametrize(("timeout_ms", "valid"), [(1, True), (1900, True), (1901, False)])
def test_the_wait_ends_before_the_commands_deadline(
    tmp_path: Path, timeout_ms: int, valid: bool
) -> None:
    text = GOOD.replace(
        "[redis]\n", f"[redis]\nmin_replicas_acked = 1\nwait_timeout_ms = {timeout_ms}\n"
    )
    path = write(tmp_path, text)
    if valid:
        assert load_settings(path, environ={}).redis.wait_timeout_ms == timeout_ms
        return
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert "redis.wait_timeout_ms = 1901: it must be 1 to 1900" in str(caught.value)
