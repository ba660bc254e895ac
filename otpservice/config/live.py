"""LiveSettings: the settings in force, re-read when the config file changes or on SIGHUP.

A Kubernetes ConfigMap mounted as a directory changes by swapping a symlink (``..data``), so
the file is watched by what it resolves to, its inode, size and modification time, every two
seconds. A new file that does not load or validate is refused with a log line naming the bad
key, and the settings in force stay. A good one replaces them whole, at once: what is read per
request (the abuse rules, geo permissions, fraud guard, safe list) and the log level take
effect immediately; sections the process was built from (Redis, secrets, providers, code,
limits per number) take effect at the next restart, and the log says which changed.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from otpservice.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from otpservice.config.schema import Settings

log = logging.getLogger("otpservice.live_settings")  # a log field: kept as named before the move

# Sections that apply as soon as a reload swaps the settings.
LIVE_SECTIONS = frozenset({"abuse", "log_level"})
WATCH_SECONDS = 2.0


class SettingsLoader(Protocol):
    """Reads and checks the settings (``validation.load_settings``, given by the runtime: the
    checks need modules above ``config``)."""

    def __call__(
        self,
        path: str | None,
        *,
        environ: Mapping[str, str] | None,
        dev: bool,
        overrides: dict[str, Any],
    ) -> Settings: ...


class LiveSettings:
    """Holds the settings in force and swaps them on a good reload."""

    def __init__(
        self,
        settings: Settings,
        *,
        load: SettingsLoader,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.current = settings
        self._load = load
        self._environ = environ
        self._seen = self._signature()

    def reload(self) -> bool:
        """Re-read the config file now; whether the new settings are in force."""
        old = self.current
        if old.config_path is None:
            return False
        try:
            new = self._load(
                old.config_path,
                environ=self._environ,
                dev=old.dev_mode,
                overrides={"host": old.host, "port": old.port, "workers": old.workers},
            )
        except ConfigError as exc:
            log.error("config reload refused, the settings in force stay: %s", exc)
            return False
        if old.dev_mode:
            # Development mode generated its secrets; new ones would end every live code.
            new = msgspec.structs.replace(new, secrets=old.secrets)
        self.current = new
        if new.log_level != old.log_level:
            logging.getLogger().setLevel(new.log_level.upper())
        later = sorted(
            name
            for name in old.__struct_fields__
            if name not in LIVE_SECTIONS and getattr(old, name) != getattr(new, name)
        )
        log.info(
            "config reloaded from %s%s",
            old.config_path,
            f"; after a restart only: {', '.join(later)}" if later else "",
        )
        return True

    async def check_file(self) -> None:
        """Reload if the file changed since the last look (``every`` ``WATCH_SECONDS``)."""
        signature = self._signature()
        if signature != self._seen:
            self._seen = signature
            self.reload()

    def _signature(self) -> tuple[str, int, int, int] | None:
        path = self.current.config_path
        if path is None:
            return None
        try:
            real = os.path.realpath(path)
            stat = os.stat(real)
        except OSError:
            return None
        return real, stat.st_ino, stat.st_size, stat.st_mtime_ns
