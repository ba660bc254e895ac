"""``otpservice secrets generate DIR``: a new set of the service's secrets, one file each, and
an API token; prints where they are and how the config names them, never a value."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import msgspec

from otpservice.config.schema import PROVIDER_SECRETS, ApiToken
from otpservice.config.sources import in_words
from otpservice.errors import ConfigError

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable

# The file holding the API client's bearer token: for the client, not for the config.
API_TOKEN_FILE = "api-token"  # noqa: S105 (a file name)
# Secrets only a rotation has: the old value, which a new set cannot have. Every other
# ``secrets.*`` name is in ``GENERATED`` (a unit test holds us to it).
ROTATION_ONLY = ("previous_pepper", "previous_outbox_key", "previous_totp_key")


def _random_text() -> str:
    # 32 random bytes, URL-safe base64 (43 characters): no quoting in a URL (the Redis
    # password, the Event Grid ?secret=), a redis.conf or a shell.
    return secrets.token_urlsafe(32)


def _aes_key() -> str:
    # What crypto.sealing.decode_key takes: 32 bytes of standard base64.
    return base64.b64encode(secrets.token_bytes(32)).decode()


def _webhook_secret() -> str:
    # Standard Webhooks: "whsec_" + base64 of 24 to 64 random bytes.
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


class Generated(NamedTuple):
    """One secret this command writes: its ``secrets.*`` name, how to make it, its use."""

    name: str
    make: Callable[[], str]
    use: str


GENERATED: tuple[Generated, ...] = (
    Generated("pepper", _random_text, "keys the code hashes"),
    Generated("index_key", _random_text, "names every number's keys in Redis; never rotate it"),
    Generated("outbox_key", _aes_key, "seals messages in the outbox (AES-256-GCM)"),
    Generated("totp_key", _aes_key, "seals authenticator-app secrets, keys recovery codes"),
    Generated("redis_password", _random_text, "the password Redis requires (requirepass)"),
    Generated(
        "redis_sentinel_password", _random_text, "the sentinels' password (with redis.sentinel)"
    ),
    Generated("acs_webhook_secret", _random_text, "what Event Grid sends to /webhooks/acs"),
    Generated("events_secret", _webhook_secret, "signs the events POSTed to events.callback_url"),
)


def file_name(secret: str) -> str:
    """The file of secret ``secret`` ("index_key" -> "index-key"), as in the Kubernetes
    Secret (k8s/base/secret.example.yaml), so ``kubectl create secret --from-file`` fits."""
    return secret.replace("_", "-")


def generate(args: argparse.Namespace) -> int:
    """``otpservice secrets generate DIR``: write a new set, or refuse and write nothing."""
    directory = Path(args.directory)
    bearer = secrets.token_urlsafe(32)
    digest = hashlib.sha256(bearer.encode()).hexdigest()
    try:
        msgspec.convert({"client": args.client, "token_sha256": digest}, ApiToken)
    except msgspec.ValidationError as exc:
        message = in_words(str(exc)).partition(" - at `")[0]
        raise ConfigError(f"--client {args.client!r}: {message}") from None
    values = {file_name(item.name): item.make() for item in GENERATED}
    values[API_TOKEN_FILE] = bearer
    refusal = _refusal(directory, list(values))
    if refusal:
        print(f"otpservice: {refusal}; nothing was written", file=sys.stderr)
        return 1
    created = not directory.exists()
    try:
        _write_all(directory, values)
    except OSError as exc:
        print(f"otpservice: cannot write {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 1
    print(_report(directory.resolve(), args.client, digest, created=created))
    return 0


def _refusal(directory: Path, names: list[str]) -> str | None:
    """Why ``directory`` must not be written to, or None: existing secrets are never replaced."""
    if directory.exists() and not directory.is_dir():
        return f"{directory} exists and is not a directory"
    if not directory.exists():
        return None
    present = sorted(path.name for path in directory.iterdir())
    if not present:
        return None
    clash = [name for name in names if name in present]
    shown = ", ".join(clash) if clash else ", ".join(present[:5]) + (", ..." * (len(present) > 5))
    return (
        f"{directory} is not empty ({shown}): existing secrets are never overwritten; "
        "give a new or empty directory"
    )


def _write_all(directory: Path, values: dict[str, str]) -> None:
    """Each value to its own file, mode 0600, in ``directory`` (mode 0700); on a failure,
    what was written is removed again."""
    created_directory = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    try:
        # chmod, not mkdir's mode: the umask could leave the owner without access, and an
        # empty directory given to us may have been open to others.
        directory.chmod(0o700)
        for name, value in values.items():
            path = directory / name
            # O_EXCL: a file that appeared since the check is not overwritten either.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            written.append(path)
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                os.fchmod(file.fileno(), 0o600)
                file.write(value + "\n")
    except OSError:
        for path in written:
            path.unlink(missing_ok=True)
        if created_directory:
            directory.rmdir()
        raise


def _report(directory: Path, client: str, digest: str, *, created: bool) -> str:
    """What was written and how the config names it: file names and the token's digest only."""
    names = [(file_name(item.name), f"secrets.{item.name}_file", item.use) for item in GENERATED]
    names.append((API_TOKEN_FILE, "-", f"API client {client!r} sends it as its bearer token"))
    width = max(len(name) for name, _, _ in names)
    key_width = max(len(key) for _, key, _ in names)
    lines = [
        f"{'Created' if created else 'Filled'} {directory} (mode 0700), each file mode 0600:",
        *(f"  {name.ljust(width)}  {key.ljust(key_width)}  {use}" for name, key, use in names),
        "",
        f"API token sha256: {digest}",
        "",
        "In the config (TOML):",
        "",
        "[secrets]",
        # A JSON string is a TOML basic string: quotes and backslashes in the path are escaped.
        *(
            f"{item.name}_file = {json.dumps(str(directory / file_name(item.name)))}"
            for item in GENERATED
        ),
        "",
        "[[api_tokens]]",
        f"client = {json.dumps(client)}",
        f'token_sha256 = "{digest}"',
        'scopes = ["otp"]',
        "",
        "Your SMS provider's credential is yours to add (a file here, mode 0600):",
        *(
            f"  {file_name(f'{kind}_{field}')}: sms.providers[N].{field}_file"
            for kind, field in PROVIDER_SECRETS.items()
        ),
        "No secret value was printed: read them from the files.",
    ]
    return "\n".join(lines)
