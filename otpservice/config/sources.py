"""Where settings come from: built-in defaults, a TOML file, ``OTP_*`` variables, command-line
flags, and ``*_file`` secrets; and, for every value given, which of them gave it.

Precedence is ``SOURCES``: each later source wins over the earlier ones, key by key. A nested
key ``code.ttl_seconds`` is ``OTP_CODE__TTL_SECONDS`` in the environment. Every secret
(``secrets.pepper`` ...) can instead be given as ``secrets.pepper_file``, a path whose content
is the value (a mounted Kubernetes Secret).
"""

from __future__ import annotations

import json
import re
import secrets
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from otpservice.config.schema import (
    DEV_SECRETS,
    PATTERN_WORDS,
    PROVIDER_SECRETS,
    SECRET_NAMES,
    Settings,
)
from otpservice.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

ENV_PREFIX = "OTP_"
SourceName = Literal["file", "environment", "flags"]
# Lowest precedence first; the built-in defaults are below all of them.
SOURCES: tuple[SourceName, ...] = ("file", "environment", "flags")
# "read": each ``*_file`` secret is read; "skip": its file is left alone and the value is
# ``NOT_READ`` (``config check --no-secrets``, for files that exist only where the service runs).
FileReading = Literal["read", "skip"]
NOT_READ = "<not read: config check --no-secrets>"
# A list index at the end of a key: "sms.providers[0]".
_INDEX = re.compile(r"\[\d+\]\Z")


@dataclass
class RawSettings:
    """The merged settings tree before conversion, and where each value in it came from."""

    tree: dict[str, Any] = field(default_factory=dict)
    # "code.ttl_seconds" -> "/etc/otp.toml" or "OTP_CODE__TTL_SECONDS" or "a command-line flag"
    origins: dict[str, str] = field(default_factory=dict)
    # With secret files skipped: "secrets.pepper_file" -> the path that was not read.
    unread_files: dict[str, str] = field(default_factory=dict)

    def origin_of(self, key: str) -> str | None:
        """Where ``key`` (or the nearest enclosing key that was given whole) came from."""
        while key:
            if key in self.origins:
                return self.origins[key]
            key = _parent(key)
        return None


def read_sources(
    path: str | Path | None,
    *,
    environ: Mapping[str, str],
    overrides: dict[str, Any] | None = None,
    files: FileReading = "read",
) -> RawSettings:
    """Merge the sources in ``SOURCES`` order and read the ``*_file`` secrets (or, with
    ``files="skip"``, note their paths in ``unread_files`` and read nothing).

    Raises:
        ConfigError: a file that cannot be read or parsed, a malformed variable, a key that only
            flags may set.
    """
    path = path or environ.get(f"{ENV_PREFIX}CONFIG")
    layers: dict[SourceName, tuple[dict[str, Any], Mapping[str, str]]] = {
        "file": _from_file(path),
        "environment": _from_environment(environ),
        "flags": (overrides or {}, {}),
    }
    raw = RawSettings()
    for source in SOURCES:
        tree, names = layers[source]
        default_name = str(path) if source == "file" else "a command-line flag"
        _merge(raw.tree, tree)
        for key in _leaf_keys(tree):
            raw.origins[key] = _name_of(key, names, default_name)
    for forbidden, why in (
        ("config_path", "config_path cannot be set; give --config or OTP_CONFIG"),
        # Only the --dev flag turns development mode on, so a production pod cannot fall into
        # it through a stray variable or config line.
        ("dev_mode", "dev_mode cannot be set in a file or the environment; use --dev"),
    ):
        if forbidden in raw.tree:
            raise ConfigError(why)
    raw.tree["config_path"] = str(path) if path else None
    _read_secret_files(raw, files)
    return raw


def convert_settings(raw: RawSettings | dict[str, Any]) -> Settings:
    """Turn the merged tree into ``Settings``; a type error names the key and its source."""
    tree, origin_of = (raw.tree, raw.origin_of) if isinstance(raw, RawSettings) else (raw, None)
    try:
        return msgspec.convert(tree, Settings, strict=False)
    except msgspec.ValidationError as exc:
        message = in_words(str(exc))
        where = ""
        if " - at `$." in message:
            message, where = message.split(" - at `$.", 1)
            where = where.rstrip("`")
        origin = origin_of(where) if origin_of and where else None
        suffix = f" (from {origin})" if origin else ""
        raise ConfigError(
            f"invalid setting {where or '(top level)'}: {message}{suffix}", key=where or None
        ) from exc


def in_words(message: str) -> str:
    """A msgspec error with "`str` matching regex '...'" saying what is accepted, in words."""
    for pattern, words in PATTERN_WORDS.items():
        quoted = f"`str` matching regex {pattern!r}"
        if quoted in message:
            return message.replace(quoted, words)
    return message


def with_dev_secrets(settings: Settings) -> Settings:
    """``settings`` with random secrets where development mode needs one and none is given."""
    filled = {
        name: getattr(settings.secrets, name) or secrets.token_urlsafe(32) for name in DEV_SECRETS
    }
    return msgspec.structs.replace(
        settings, secrets=msgspec.structs.replace(settings.secrets, **filled)
    )


def _from_file(path: str | Path | None) -> tuple[dict[str, Any], dict[str, str]]:
    if not path:
        return {}, {}
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8")), {}
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc


def _from_environment(env: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The ``OTP_*`` variables as a tree, and the variable that gave each top key of it."""
    tree: dict[str, Any] = {}
    names: dict[str, str] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name == f"{ENV_PREFIX}CONFIG":
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"environment variable {name} conflicts with another one")
        # Lists and tables (api_tokens) come as JSON; scalars stay strings and are converted.
        parsed: Any = value
        if value.lstrip().startswith(("[", "{")):
            try:
                parsed = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"environment variable {name} is not valid JSON: {exc}") from exc
        node[path[-1]] = parsed
        names[".".join(path)] = name
    return tree, names


def _name_of(key: str, names: Mapping[str, str], default: str) -> str:
    """The variable that set ``key`` or a key enclosing it, else ``default`` (the file, flags)."""
    while key:
        if key in names:
            return names[key]
        key = _parent(key)
    return default


def _leaf_keys(tree: Any, prefix: str = "") -> list[str]:
    """Dotted keys of every value in ``tree``; list items as ``key[0]``. An empty table gives
    no key: it sets nothing, so nothing under it is blamed on its source."""
    if isinstance(tree, dict):
        return [k for name, v in tree.items() for k in _leaf_keys(v, f"{prefix}.{name}")]
    if isinstance(tree, list) and tree:
        return [k for i, v in enumerate(tree) for k in _leaf_keys(v, f"{prefix}[{i}]")]
    return [prefix[1:]] if prefix else []


def _parent(key: str) -> str:
    """The enclosing key: ``sms.providers[0].url`` -> ``sms.providers[0]`` -> ``sms.providers``."""
    index = _INDEX.search(key)
    if index is not None:
        return key[: index.start()]
    return key.rpartition(".")[0]


def _merge(into: dict[str, Any], new: dict[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _read_secret_files(raw: RawSettings, files: FileReading) -> None:
    section = raw.tree.get("secrets")
    if section is not None:
        if not isinstance(section, dict):
            raise ConfigError("invalid setting secrets: Expected `object`", key="secrets")
        _read_files(raw, section, SECRET_NAMES, "secrets", files)
    sms = raw.tree.get("sms")
    providers = sms.get("providers") if isinstance(sms, dict) else None
    if isinstance(providers, list):
        for index, provider in enumerate(providers):
            if isinstance(provider, dict):
                secret_field = PROVIDER_SECRETS.get(str(provider.get("type")))
                if secret_field:
                    _read_files(raw, provider, (secret_field,), f"sms.providers[{index}]", files)


def _read_files(
    raw: RawSettings,
    section: dict[str, Any],
    names: tuple[str, ...],
    where: str,
    files: FileReading,
) -> None:
    """Replace each ``<name>_file`` in ``section`` by the content of the file it names (by
    ``NOT_READ`` when ``files`` is "skip")."""
    for name in names:
        file_key = f"{name}_file"
        if file_key not in section:
            continue
        file_path = section.pop(file_key)
        if name in section:
            raise ConfigError(
                f"{where}.{name} and {where}.{file_key} are both set; give one",
                key=f"{where}.{name}",
            )
        if files == "skip":
            section[name] = NOT_READ
            raw.unread_files[f"{where}.{file_key}"] = str(file_path)
            continue
        try:
            section[name] = Path(str(file_path)).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(
                f"{where}.{file_key}: cannot read {file_path}: {exc.strerror}",
                key=f"{where}.{file_key}",
            ) from exc
        given_by = raw.origin_of(f"{where}.{file_key}")
        raw.origins[f"{where}.{name}"] = f"the file {file_path}" + (
            f" named by {given_by}" if given_by else ""
        )
