"""The benchmark's machinery: Redis and service processes, SMS log, numbers, HTTP, wrk, CPU."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import resource
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import phonenumbers
import redis

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

BENCH_DIR = Path(__file__).resolve().parent
LUA_SCRIPT = BENCH_DIR / "otp.lua"
CORES = os.cpu_count() or 1
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# Area codes whose numbers +1 AAA 200 0000 .. +1 AAA 999 9999 phonenumbers accepts (checked at
# start). Each benchmark step takes a block of its own, so no step cancels another's challenges
# (a new challenge for a number replaces that number's previous one).
AREA_CODES = (
    "415",
    "202",
    "212",
    "213",
    "312",
    "617",
    "206",
    "303",
    "404",
    "512",
    "646",
    "702",
    "305",
    "503",
    "615",
    "713",
    "720",
    "801",
    "919",
    "210",
)
BLOCK_FIRST, BLOCK_LAST = 2_000_000, 9_999_999

# The console sender's line; the code is the first run of 4 to 10 digits in the message.
SMS_LINE = re.compile(r"^\[sms to (\+\d+)\] challenge=(\S+) .*?\b(\d{4,10})\b")
# Text log lines name the level in capitals, JSON lines in a "level" member.
PROBLEM_LINE = re.compile(
    r'\b(WARNING|ERROR|CRITICAL)\b|"level": ?"(warning|error|critical)"|Traceback'
)


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def stop_process(process: subprocess.Popen[Any] | None, timeout_s: float = 10.0) -> None:
    """Terminate one child we started (by its pid), and kill it if it does not exit in time."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout_s)


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds a running process (all its threads) and its running children
    (``serve --workers N`` starts worker processes) have used."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text[text.rindex(")") + 2 :].split()
    own = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return own + sum(process_cpu_s(child) for child in _children(pid))


def _children(pid: int) -> list[int]:
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return children


_LOOSE_RULES = "\n".join(
    f'[[abuse.rules]]\nname = "{name}"\nscope = "{scope}"\n'
    f"windows = [{{limit = 1000000000, seconds = {seconds}}}]"
    for name, scope, seconds in (
        ("per_ip", "ip", 3600),
        ("per_ip_prefix", "ip_prefix", 3600),
        ("per_prefix", "prefix", 3600),
        ("per_country", "country", 3600),
        ("global", "global", 60),
        ("per_client", "client", 60),
    )
)


class RedisProcess:
    """A private ``redis-server`` on a free loopback port, no persistence, files in ``workdir``."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not installed (apt-get install redis-server)")
        self.port = free_port()
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(workdir),
                "--logfile",
                str(workdir / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.client = redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    stop_process(self.process)
                    raise
                time.sleep(0.05)

    @property
    def url(self) -> str:
        """The URL the service connects to."""
        return f"redis://127.0.0.1:{self.port}/0"

    def info(self, section: str) -> dict[str, Any]:
        """One ``INFO`` section as a mapping."""
        result: dict[str, Any] = self.client.info(section)
        return result

    def close(self) -> None:
        """Stop the server."""
        self.client.close()
        stop_process(self.process)


class SmsLog:
    """Reads the console SMS lines the service prints, to learn each challenge's code."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._offset = 0
        self._unused: dict[str, str] = {}  # challenge id -> code, in creation order
        self.total = 0

    def poll(self) -> None:
        """Read the complete lines written since the last poll."""
        with self._path.open("rb") as stream:
            stream.seek(self._offset)
            data = stream.read()
        end = data.rfind(b"\n") + 1
        self._offset += end
        for line in data[:end].decode(errors="replace").splitlines():
            match = SMS_LINE.match(line)
            if match:
                self._unused[match.group(2)] = match.group(3)
                self.total += 1

    @property
    def unused(self) -> int:
        """Challenges whose code has not been handed out yet."""
        return len(self._unused)

    def take(self, count: int) -> list[tuple[str, str]]:
        """Up to ``count`` (challenge id, code) pairs, oldest first; each is handed out once."""
        taken: list[tuple[str, str]] = []
        for challenge_id in list(self._unused)[:count]:
            taken.append((challenge_id, self._unused.pop(challenge_id)))
        return taken

    def forget(self) -> None:
        """Drop every unused pair (their challenges are gone, e.g. after FLUSHALL)."""
        self.poll()
        self._unused.clear()


@dataclass(frozen=True)
class ServiceConfig:
    """What the benchmark puts in the service's TOML file."""

    redis_url: str
    memory_kib: int
    time_cost: int
    parallelism: int
    log_level: str
    max_concurrent: int | None = None
    workers: int = 1
    # Newer otpservice refuses the console sender outside --dev unless acknowledged.
    acknowledge_console: bool = False
    # Newer otpservice refuses the loose send limits and light hashing below unless told.
    acknowledge_weak_limits: bool = False
    # Newer otpservice lists providers (``[[sms.providers]]``) instead of ``sms.provider``.
    provider_list: bool = False
    # Newer otpservice seals its outbox and needs ``secrets.outbox_key``.
    outbox_key: bool = False
    # Replaces the console provider section; appended as is.
    sms_toml: str | None = None
    # More [redis] lines (``cluster = true``, ``min_replicas_acked = 1``).
    redis_toml: str = ""
    extra_toml: str = ""
    # Drawn once per config, so that every process started with it is one fleet: each can
    # open the outbox entries and check the codes of the others.
    pepper: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    index_key: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    outbox_secret: str = field(
        default_factory=lambda: base64.b64encode(secrets.token_bytes(32)).decode()
    )

    def toml(self) -> str:
        """The config file: generous send limits, console SMS, the config's secrets."""
        concurrency = (
            f"max_concurrent = {self.max_concurrent}\n" if self.max_concurrent is not None else ""
        )
        unsafe = "\n[unsafe]\n" if self.acknowledge_console or self.acknowledge_weak_limits else ""
        if self.acknowledge_console:
            unsafe += "allow_console_sender = true\n"
        if self.acknowledge_weak_limits:
            unsafe += "allow_weak_limits = true\n"
        console = self.sms_toml or (
            '[[sms.providers]]\ntype = "console"'
            if self.provider_list
            else '[sms]\nprovider = "console"'
        )
        outbox_key = f'outbox_key = "{self.outbox_secret}"\n' if self.outbox_key else ""
        return f"""\
log_level = "{self.log_level}"
workers = {self.workers}

[redis]
url = "{self.redis_url}"
{self.redis_toml}

[secrets]
pepper = "{self.pepper}"
index_key = "{self.index_key}"
{outbox_key}
[hashing]
memory_kib = {self.memory_kib}
time_cost = {self.time_cost}
parallelism = {self.parallelism}
{concurrency}
[send_limits]
min_interval_seconds = 0
per_hour = 100000000
per_day = 100000000

[code]
ttl_seconds = 600

# The default abuse rules and fraud guard, doing all their work, with limits a load test
# never reaches.
[abuse.fraud_guard]
floor = 0.0
{_LOOSE_RULES}

{console}
{unsafe}
{self.extra_toml}"""


@dataclass(frozen=True)
class Otpservice:
    """The otpservice the benchmark runs: where it is imported from, and what it accepts."""

    source: Path  # the working directory of ``python -m otpservice``
    module_path: str
    version: str
    acknowledge_console: bool  # has ``unsafe.allow_console_sender``
    provider_list: bool  # has ``sms.providers``
    outbox_key: bool  # needs ``secrets.outbox_key``
    acknowledge_weak_limits: bool = False  # has ``unsafe.allow_weak_limits``

    @classmethod
    def probe(cls, source: Path) -> Otpservice:
        """Ask ``python -m otpservice``'s interpreter, run from ``source``, what it imports."""
        code = (
            "import json, otpservice, otpservice.config.schema as s; print(json.dumps(["
            "otpservice.__file__, getattr(otpservice, '__version__', '?'), "
            "'allow_console_sender' in s.UnsafeOverrides.__struct_fields__, "
            "'providers' in s.SmsSettings.__struct_fields__, "
            "'outbox_key' in s.Secrets.__struct_fields__, "
            "'allow_weak_limits' in s.UnsafeOverrides.__struct_fields__]))"
        )
        completed = subprocess.run(
            [sys.executable, "-c", code], cwd=source, capture_output=True, text=True, check=False
        )
        if completed.returncode != 0:
            raise SystemExit(f"cannot import otpservice from {source}:\n{completed.stderr}")
        last_line = completed.stdout.strip().splitlines()[-1]
        path, version, acknowledge, providers, outbox_key, weak = json.loads(last_line)
        return cls(
            source,
            str(Path(path).parent),
            version,
            bool(acknowledge),
            bool(providers),
            bool(outbox_key),
            bool(weak),
        )


def wait_ready(
    process: subprocess.Popen[bytes], stderr_path: Path, what: str, probe: Callable[[], bool]
) -> None:
    """Wait (30 s at most) until ``probe`` says the server ``process`` serves; raise with the end
    of its stderr if it exits or never does."""
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited at start-up:\n{stderr_tail(stderr_path)}")
        with contextlib.suppress(httpx.HTTPError):
            if probe():
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not become ready:\n{stderr_tail(stderr_path)}")


def stderr_tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a server's stderr file."""
    text = path.read_text(encoding="utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


class Service:
    """``otpservice serve`` with stdout (the console SMS) and stderr sent to files."""

    def __init__(self, workdir: Path, name: str, config: ServiceConfig, source: Path) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.config_path = workdir / f"otpservice-{name}.toml"
        self.config_path.write_text(config.toml(), encoding="utf-8")
        self.stdout_path = workdir / f"service-{name}.out"
        self.stderr_path = workdir / f"service-{name}.err"
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.process: subprocess.Popen[bytes] = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "otpservice",
                    "serve",
                    "--config",
                    str(self.config_path),
                    "--port",
                    str(self.port),
                ],
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                cwd=source,
            )
        self.sms = SmsLog(self.stdout_path)
        try:
            wait_ready(
                self.process,
                self.stderr_path,
                "otpservice",
                lambda: httpx.get(f"{self.base_url}/readyz", timeout=1).status_code == 200,
            )
        except BaseException:
            self.close()
            raise

    def stderr_problems(self) -> list[str]:
        """Warning, error and traceback lines the service wrote to stderr."""
        text = self.stderr_path.read_text(encoding="utf-8", errors="replace")
        return [line for line in text.splitlines() if PROBLEM_LINE.search(line)]

    def stderr_levels(self) -> Counter[str]:
        """How many stderr lines start with each log level (INFO, ERROR, ...)."""
        text = self.stderr_path.read_text(encoding="utf-8", errors="replace")
        # Text lines ("<date> <time> INFO ...") or JSON lines ({"level":"info",...}).
        text_levels = r"^(?:\S+ \S+ )?(DEBUG|INFO|WARNING|ERROR|CRITICAL)\b"
        json_levels = r'"level": ?"(debug|info|warning|error|critical)"'
        return Counter(
            m.group(1).upper()
            for pattern in (text_levels, json_levels)
            for m in re.finditer(pattern, text, re.M)
        )

    def cpu_s(self) -> float:
        """CPU seconds the service process has used so far."""
        return process_cpu_s(self.process.pid)

    def close(self) -> None:
        """Stop the service (SIGTERM, then SIGKILL)."""
        stop_process(self.process, timeout_s=25)


class SkeletonProcess:
    """The reference app (``skeleton.py``) under uvicorn, as the service runs: same loop and
    HTTP parser (uvicorn's defaults), access log off, ``workers`` processes."""

    def __init__(
        self, workdir: Path, redis_url: str, argon2: str, workers: int, *, redis: bool = True
    ) -> None:
        """``redis=False``: the floor, which leaves Redis out (see skeleton.py)."""
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.redis = redis
        env = {
            **os.environ,
            "SKELETON_REDIS_URL": redis_url,
            "SKELETON_ARGON2": argon2,
            "SKELETON_REDIS": "1" if redis else "0",
        }
        err_path = workdir / f"{self.name}.err"
        with err_path.open("wb") as err:
            self.process: subprocess.Popen[bytes] = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "skeleton:app",
                    "--port",
                    str(self.port),
                    "--workers",
                    str(workers),
                    "--log-level",
                    "warning",
                    "--no-access-log",
                ],
                stdout=subprocess.DEVNULL,
                stderr=err,
                stdin=subprocess.DEVNULL,
                cwd=BENCH_DIR,
                env=env,
            )
        body = {"challenge_id": "warm.up", "code": "000000"}
        try:
            wait_ready(
                self.process,
                err_path,
                f"the {self.name}",
                lambda: (
                    httpx.post(f"{self.base_url}/verify", json=body, timeout=5).status_code == 200
                ),
            )
        except BaseException:
            self.close()
            raise

    @property
    def name(self) -> str:
        """``skeleton``, or ``floor`` when it leaves Redis out."""
        return "skeleton" if self.redis else "floor"

    def close(self) -> None:
        """Stop it (SIGTERM, then SIGKILL)."""
        stop_process(self.process)


# --------------------------------------------------------------------------- CPU accounting


def _machine_busy_s() -> tuple[float, float]:
    """Busy (user, nice, system, irq, softirq) and steal CPU seconds of the whole machine."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values[:8]
    return (user + nice + system + irq + softirq) / CLOCK_TICKS, steal / CLOCK_TICKS


def _own_cpu_s() -> float:
    """CPU seconds of this process and of its children already waited for (wrk)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@dataclass(frozen=True)
class CpuUse:
    """Where the CPU went during one measurement, in seconds."""

    wall_s: float
    service_s: float
    ours_s: float  # service + Redis + this script + wrk
    other_s: float  # everything else on the machine
    steal_s: float


class CpuMeter:
    """Measures the CPU the benchmark's processes used, and what the rest of the machine did.

    ``pids`` are the running processes that count as ours (service first, then Redis); this
    script and the children it has waited for (wrk) count as ours too.
    """

    def __init__(self, pids: Sequence[int] = ()) -> None:
        self._pids = tuple(pids)
        self._start = self._read()

    def _read(self) -> tuple[float, float, float, float, float]:
        busy, steal = _machine_busy_s()
        cpu = [process_cpu_s(pid) for pid in self._pids]
        service = cpu[0] if cpu else 0.0
        return time.monotonic(), busy, steal, service, sum(cpu) + _own_cpu_s()

    def stop(self) -> CpuUse:
        """The CPU used since the meter was made."""
        end = self._read()
        wall, busy, steal, service, ours = (b - a for a, b in zip(self._start, end, strict=True))
        return CpuUse(
            wall_s=wall,
            service_s=service,
            ours_s=ours,
            other_s=max(busy - ours, 0.0),
            steal_s=steal,
        )


def wait_for_quiet(pids: Sequence[int], limit_cores: float, max_wait_s: float) -> float:
    """Wait (up to ``max_wait_s``) until other processes use under ``limit_cores``.

    The machine may be shared; a load run next to someone else's test measures both. Returns
    the other processes' load (cores) over the last one-second sample.
    """
    deadline = time.monotonic() + max_wait_s
    while True:
        meter = CpuMeter(pids)
        time.sleep(1.0)
        use = meter.stop()
        load = use.other_s / use.wall_s
        if load < limit_cores or time.monotonic() >= deadline:
            return load


# --------------------------------------------------------------------------- numbers


class NumberBlocks:
    """Hands out blocks of distinct valid phone numbers, one area code per block."""

    def __init__(self) -> None:
        self._valid = [code for code in dict.fromkeys(AREA_CODES) if _block_is_valid(code)]
        if not self._valid:
            raise SystemExit("phonenumbers accepts none of the benchmark's area codes")
        self._free = list(self._valid)

    def reset(self) -> None:
        """Make every block free again (after FLUSHALL, no number has a challenge)."""
        self._free = list(self._valid)

    def take(self) -> str:
        """A fresh prefix ``+1AAA``: numbers prefix + 2000000 .. prefix + 9999999 are valid."""
        if not self._free:
            raise RuntimeError("out of number blocks: add area codes to AREA_CODES")
        return f"+1{self._free.pop(0)}"


def _block_is_valid(area_code: str) -> bool:
    step = (BLOCK_LAST - BLOCK_FIRST) // 400
    samples = [*range(BLOCK_FIRST, BLOCK_LAST, step), BLOCK_LAST]
    return all(
        phonenumbers.is_valid_number(phonenumbers.parse(f"+1{area_code}{n:07d}", None))
        for n in samples
    )


def phones(prefix: str, count: int) -> list[str]:
    """The first ``count`` numbers of the block ``prefix``."""
    return [f"{prefix}{BLOCK_FIRST + i:07d}" for i in range(count)]


# --------------------------------------------------------------------------- HTTP with httpx


@dataclass
class CallTally:
    """Outcome of a batch of httpx calls."""

    statuses: Counter[str] = field(default_factory=Counter)  # "201", "503 hashing_busy"
    errors: Counter[str] = field(default_factory=Counter)

    def count(self, status: int) -> int:
        """Responses with this status (success statuses carry no problem code)."""
        return self.statuses[str(status)]

    def failures(self, ok: int) -> str:
        """Everything that was not ``ok``, or ``"-"``."""
        bad = {k: v for k, v in self.statuses.items() if k != str(ok)}
        bad.update(self.errors)
        return ", ".join(f"{k}: {v}" for k, v in sorted(bad.items())) or "-"


def status_key(response: httpx.Response) -> str:
    """``"201"``, or the status and the problem's stable code: ``"503 hashing_busy"``."""
    if response.status_code < 300:
        return str(response.status_code)
    try:
        code = response.json().get("code", "?")
    except ValueError:
        code = "?"
    return f"{response.status_code} {code}"


async def _post_all(
    base_url: str, path: str, bodies: Sequence[dict[str, str]], concurrency: int
) -> CallTally:
    tally = CallTally()
    queue = iter(bodies)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as client:

        async def worker() -> None:
            for body in queue:
                try:
                    response = await client.post(path, json=body)
                    tally.statuses[status_key(response)] += 1
                except httpx.HTTPError as exc:
                    tally.errors[type(exc).__name__] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return tally


def post_all(
    base_url: str, path: str, bodies: Sequence[dict[str, str]], concurrency: int
) -> CallTally:
    """POST each JSON body once, ``concurrency`` at a time."""
    return asyncio.run(_post_all(base_url, path, bodies, concurrency))


def create_challenges(service: Service, numbers: Sequence[str], concurrency: int) -> CallTally:
    """POST /challenge for each number; their codes land in ``service.sms``."""
    tally = post_all(service.base_url, "/challenge", [{"phone": n} for n in numbers], concurrency)
    service.sms.poll()
    return tally


def verify_pairs(service: Service, pairs: Sequence[tuple[str, str]], concurrency: int) -> CallTally:
    """POST /verify with each (challenge id, right code) pair."""
    bodies = [{"challenge_id": i, "code": c} for i, c in pairs]
    return post_all(service.base_url, "/verify", bodies, concurrency)


# --------------------------------------------------------------------------- wrk


def wrk_threads(clients: int) -> int:
    """wrk threads for ``clients`` connections: one per core, at most one per connection."""
    return max(1, min(CORES, clients))


def run_wrk(
    base_url: str, clients: int, duration_s: int, script_args: Sequence[str]
) -> dict[str, Any]:
    """Run wrk with ``otp.lua`` and return its ``BENCH_RESULT`` record."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    command = [
        wrk,
        "-t",
        str(wrk_threads(clients)),
        "-c",
        str(clients),
        "-d",
        f"{duration_s}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA_SCRIPT),
        base_url,
        "--",
        *script_args,
    ]
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=duration_s + 60, check=False
    )
    for line in completed.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            record: dict[str, Any] = json.loads(line.removeprefix("BENCH_RESULT "))
            return record
    raise RuntimeError(f"wrk gave no result:\n{completed.stdout}\n{completed.stderr}")
