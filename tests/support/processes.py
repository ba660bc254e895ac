"""The service as a real process: started, waited for, stopped."""

from __future__ import annotations

import hashlib
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import httpx

from tests.support.app import INDEX_KEY, OUTBOX_KEY, PEPPER, TOTP_KEY
from tests.support.servers.redis import RedisServer, free_port


def uv_binary() -> str:
    """The uv executable itself: a pyenv shim on PATH is a script that needs pyenv's root."""
    found = shutil.which("uv")
    if found is None or Path(found).read_bytes()[:4] != b"\x7fELF":
        found = subprocess.check_output(
            ["python3", "-c", "import uv; print(uv.find_uv_bin())"], text=True
        ).strip()
    return os.path.realpath(found)


# The API token of ``write_config``'s client, "login-app" (otp scope).
TOKEN = "integration-token-0123456789abcdef0123"


def write_config(tmp_path: Path, redis_server: RedisServer, extra: str = "") -> Path:
    """A production config: real Redis, secrets from files, a token, console SMS allowed."""
    for name, value in (
        ("pepper", PEPPER),
        ("index-key", INDEX_KEY),
        ("outbox-key", OUTBOX_KEY),
        ("totp-key", TOTP_KEY),
    ):
        (tmp_path / name).write_text(value)
    config = tmp_path / "otp.toml"
    config.write_text(
        f"""
log_level = "debug"
[redis]
url = "{redis_server.url}"
key_prefix = "cli-test"
[secrets]
pepper_file = "{tmp_path / "pepper"}"
index_key_file = "{tmp_path / "index-key"}"
outbox_key_file = "{tmp_path / "outbox-key"}"
totp_key_file = "{tmp_path / "totp-key"}"
[hashing]
memory_kib = 1024
time_cost = 1
[unsafe]
allow_console_sender = true
allow_weak_limits = true
[[api_tokens]]
client = "login-app"
token_sha256 = "{hashlib.sha256(TOKEN.encode()).hexdigest()}"
scopes = ["otp"]
{extra}"""
    )
    return config


class ServiceProcess:
    """``otpservice serve`` (or ``worker``) in a subprocess, its output collected by line."""

    def __init__(
        self, *args: str, command: str = "serve", env: dict[str, str] | None = None
    ) -> None:
        self.port = free_port()
        port = ["--port", str(self.port)] if command == "serve" else []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "otpservice", command, *port, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.stdout: queue.Queue[str] = queue.Queue()
        self.stderr_lines: list[str] = []
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        self._pumps = [
            threading.Thread(target=_pump, args=(self.process.stdout, self.stdout.put)),
            threading.Thread(target=_pump, args=(self.process.stderr, self.stderr_lines.append)),
        ]
        for pump in self._pumps:
            pump.start()
        self.url = f"http://127.0.0.1:{self.port}"
        if command == "serve":
            self._wait_until_up()

    def _wait_until_up(self) -> None:
        try:
            self.wait_for(self.url, self.process)
        except RuntimeError as exc:
            self.stop()
            raise RuntimeError(f"{exc}: {''.join(self.stderr_lines)}") from None

    @staticmethod
    def wait_for(url: str, process: subprocess.Popen[str], timeout_s: float = 20) -> None:
        """Wait until the service at ``url`` answers /healthz (``timeout_s`` at most)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError("service exited")
            try:
                if httpx.get(f"{url}/healthz", timeout=0.5).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("service did not start")

    def next_code(self, challenge_id: str) -> str:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                line = self.stdout.get(timeout=5)
            except queue.Empty:
                raise AssertionError(
                    "no SMS printed: " + "".join(self.stderr_lines[-30:])
                ) from None
            match = re.search(rf"challenge={re.escape(challenge_id)} (\d+) is your", line)
            if match:
                return match.group(1)
        raise AssertionError("no SMS printed for the challenge")

    def stop(self) -> None:
        """SIGTERM, then check the shutdown was graceful (uvicorn re-raises the signal after)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            assert self.process.wait(timeout=25) in (0, -signal.SIGTERM)
        finally:
            # Closed whatever the outcome: left open, they would fail a later test when
            # collected (ResourceWarning is an error here).
            self._close_streams()

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, as when a node dies."""
        self.process.kill()
        self.process.wait(timeout=10)
        self._close_streams()

    def _close_streams(self) -> None:
        for pump in self._pumps:
            pump.join(timeout=5)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()

    @property
    def stopped(self) -> bool:
        return self.process.stdout is None or self.process.stdout.closed


def _pump(stream: IO[str], put: Callable[[str], None]) -> None:
    for line in stream:
        put(line)


ROOT = Path(__file__).resolve().parents[2]


def copy_checkout(destination: Path, *, untracked: bool = False) -> None:
    """The files git tracks (and, with ``untracked``, the new ones it does not ignore)."""
    listing = ["git", "ls-files", "-z", *(["-co", "--exclude-standard"] if untracked else [])]
    names = subprocess.check_output(listing, cwd=ROOT).split(b"\0")
    for name in filter(None, names):
        source = ROOT / name.decode()
        if source.is_file():
            target = destination / name.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
