"""The benchmark's figures: argon2 cost, load results, Redis figures, and the summary text."""

from __future__ import annotations

import re
import secrets
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from argon2 import PasswordHasher

from bench.harness import CORES

if TYPE_CHECKING:
    from collections.abc import Sequence

    from bench.harness import CpuUse


@dataclass(frozen=True)
class Profile:
    """One argon2id parameter set to benchmark, and what /verify should reach with it."""

    name: str
    label: str
    memory_kib: int
    time_cost: int
    parallelism: int = 1
    target_ratio: float | None = None  # a fraction of the argon2 ceiling
    target_rps: float | None = None  # or an absolute rate

    def hasher(self) -> PasswordHasher:
        """An argon2-cffi hasher with these parameters."""
        return PasswordHasher(
            time_cost=self.time_cost, memory_cost=self.memory_kib, parallelism=self.parallelism
        )


PROFILES = (
    Profile("default", "OWASP m=19456 KiB t=2", 19456, 2, target_ratio=0.90),
    Profile("light", "m=8192 KiB t=1", 8192, 1, target_ratio=0.85),
    Profile("off", "effectively off m=8 KiB t=1", 8, 1, target_rps=6000),
)


# --------------------------------------------------------------------------- argon2


@dataclass(frozen=True)
class HashCost:
    """argon2 cost measured in-process: median times, and hashes/s with all cores busy."""

    hash_s: float
    verify_s: float
    parallel_rps: float

    @property
    def ceiling_rps(self) -> float:
        """The argon2 ceiling: cores / median time per hash."""
        return CORES / self.hash_s

    def around(self, before: HashCost, after: HashCost) -> HashCost:
        """The cost of a run timed right ``before`` and ``after`` it: the mean of the two (this
        profile-wide cost keeps its all-cores rate)."""
        return HashCost(
            hash_s=(before.hash_s + after.hash_s) / 2,
            verify_s=(before.verify_s + after.verify_s) / 2,
            parallel_rps=self.parallel_rps,
        )


def measure_hash(profile: Profile, runs: int, parallel_s: float) -> HashCost:
    """Time ``PasswordHasher.hash`` and ``verify`` of a 32-byte input (as the service does).

    Also counts the hashes ``CORES`` threads complete in ``parallel_s`` seconds, which shows
    whether the cores really scale (shared caches and memory bandwidth, noisy neighbours).
    """
    hasher = profile.hasher()
    secret = secrets.token_bytes(32)
    encoded = hasher.hash(secret)  # warm-up
    hash_times, verify_times = [], []
    for _ in range(runs):
        start = time.perf_counter()
        encoded = hasher.hash(secret)
        hash_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        hasher.verify(encoded, secret)
        verify_times.append(time.perf_counter() - start)

    counts = [0] * CORES
    deadline = time.perf_counter() + parallel_s

    def hash_until_deadline(slot: int) -> None:
        while time.perf_counter() < deadline:
            hasher.hash(secret)
            counts[slot] += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=hash_until_deadline, args=(i,)) for i in range(CORES)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    parallel_rps = sum(counts) / (time.perf_counter() - started)
    return HashCost(
        hash_s=statistics.median(hash_times),
        verify_s=statistics.median(verify_times),
        parallel_rps=parallel_rps,
    )


# --------------------------------------------------------------------------- load


@dataclass(frozen=True)
class LoadResult:
    """One wrk run against one endpoint."""

    profile: Profile
    endpoint: str
    clients: int
    requests: int
    duration_s: float
    latency_ms: dict[str, float]
    statuses: dict[str, int]  # "200" or "503 hashing_busy" -> responses
    socket_errors: dict[str, int]
    exhausted: bool
    pairs: int | None
    cost: HashCost
    cpu: CpuUse

    @classmethod
    def from_wrk(
        cls,
        record: dict[str, Any],
        profile: Profile,
        endpoint: str,
        clients: int,
        cost: HashCost,
        cpu: CpuUse,
        pairs: int | None = None,
    ) -> LoadResult:
        """A result from the ``BENCH_RESULT`` record ``otp.lua`` prints."""
        errors = record["errors"]
        return cls(
            profile=profile,
            endpoint=endpoint,
            clients=clients,
            requests=record["requests"],
            duration_s=record["duration_us"] / 1e6,
            latency_ms={k: v / 1000 for k, v in record["latency_us"].items()},
            statuses=dict(record["statuses"]),
            socket_errors={k: errors[k] for k in ("connect", "read", "write", "timeout")},
            exhausted=record["exhausted_threads"] > 0,
            pairs=pairs,
            cost=cost,
            cpu=cpu,
        )

    @property
    def ok_status(self) -> int:
        """The status a successful call gets."""
        return 201 if self.endpoint == "/challenge" else 200

    @property
    def ok(self) -> int:
        """Successful responses."""
        return self.statuses.get(str(self.ok_status), 0)

    @property
    def rps(self) -> float:
        """Successful responses per second."""
        return self.ok / self.duration_s

    @property
    def ratio(self) -> float:
        """Throughput as a fraction of the argon2 ceiling (cores / hash time)."""
        return self.rps / self.cost.ceiling_rps

    @property
    def other_load(self) -> float:
        """Cores other processes used during the run."""
        return self.cpu.other_s / self.cpu.wall_s

    @property
    def service_cpu_ms(self) -> float:
        """Service CPU (all threads, argon2 included) per successful request, in ms."""
        return self.cpu.service_s * 1000 / self.ok if self.ok else float("nan")

    def failures(self) -> str:
        """Non-success statuses and socket errors, or ``"-"``."""
        bad = {k: v for k, v in sorted(self.statuses.items()) if k != str(self.ok_status)}
        bad.update({k: v for k, v in self.socket_errors.items() if v})
        text = ", ".join(f"{k}: {v}" for k, v in bad.items()) or "-"
        return text + (" (ran out of pairs)" if self.exhausted else "")

    def target(self) -> str:
        """How a /verify result compares with the profile's target; empty for /challenge."""
        if self.endpoint != "/verify":
            return ""
        if self.profile.target_ratio is not None:
            verdict = "met" if self.ratio >= self.profile.target_ratio else "BELOW"
            return f">={self.profile.target_ratio:.0%}: {verdict}"
        if self.profile.target_rps is not None:
            verdict = "met" if self.rps >= self.profile.target_rps * 0.95 else "BELOW"
            return f"~{self.profile.target_rps:,.0f}/s: {verdict}"
        return ""

    def line(self) -> str:
        """A one-line progress report."""
        return (
            f"[{self.profile.name}] {self.endpoint} c={self.clients}: {self.rps:,.0f} req/s "
            f"({self.ratio:.0%} of ceiling), p50 {self.latency_ms['p50']:.1f} ms, "
            f"p99 {self.latency_ms['p99']:.1f} ms, non-2xx {self.failures()}, "
            f"service CPU {self.service_cpu_ms:.2f} ms/req, "
            f"other load {self.other_load:.2f} cores"
            + (f", {self.pairs} pairs" if self.pairs is not None else "")
        )


# --------------------------------------------------------------------------- Redis


def key_kind(key: str) -> str:
    """Which of the service's keys this is (see otpservice/store/keys.py)."""
    if ":c:" in key:
        return "challenge hash"
    for suffix, kind in (
        (":stream", "outbox stream"),
        (":active", "active pointer"),
        (":sends", "sends zset"),
        (":guard", "guard hash"),
    ):
        if key.endswith(suffix):
            return kind
    return "other"


@dataclass
class KindUsage:
    """The keys of one kind: how many, their ``MEMORY USAGE``, encodings, longest value."""

    keys: int = 0
    bytes: int = 0
    encodings: Counter[str] = field(default_factory=Counter)
    longest_value: int = 0  # bytes, over the sampled keys' values (hash fields, strings)


@dataclass(frozen=True)
class MemoryFigures:
    """Redis memory per live challenge."""

    profile: str
    challenges: int
    failures: str
    used_memory_delta: int
    usage_by_kind: dict[str, KindUsage]
    listpack_value_limit: str  # Redis's hash-max-listpack-value

    @property
    def per_challenge(self) -> float:
        """``used_memory`` growth per challenge."""
        return self.used_memory_delta / max(self.challenges, 1)

    @property
    def usage_per_challenge(self) -> float:
        """Sum of ``MEMORY USAGE`` over all keys, per challenge."""
        return sum(u.bytes for u in self.usage_by_kind.values()) / max(self.challenges, 1)


@dataclass(frozen=True)
class CommandFigures:
    """Redis commands per HTTP request, from ``INFO commandstats``."""

    endpoint: str
    requests: int
    round_trips: int  # commands the service sent itself (EVALSHA ...)
    in_scripts: int  # commands the Lua scripts ran
    by_command: dict[str, int]
    failures: str


# --------------------------------------------------------------------------- summary


@dataclass
class Report:
    """Everything measured, for the summary."""

    costs: dict[str, HashCost] = field(default_factory=dict)
    loads: list[LoadResult] = field(default_factory=list)
    # The reference skeleton's /verify runs (skeleton.py), same profiles and client counts.
    skeleton: list[LoadResult] = field(default_factory=list)
    # The skeleton without Redis (--floor): HTTP and the hash only.
    floor: list[LoadResult] = field(default_factory=list)
    memory: MemoryFigures | None = None
    commands: list[CommandFigures] = field(default_factory=list)
    stderr: dict[str, tuple[dict[str, int], list[str]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A plain text table; cells that look numeric are right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        out = []
        for i, cell in enumerate(cells):
            numeric = i > 0 and bool(re.fullmatch(r"[-\d.,%]+", cell))
            out.append(cell.rjust(widths[i]) if numeric else cell.ljust(widths[i]))
        return "  ".join(out).rstrip()

    return [line(headers), "  ".join("-" * w for w in widths), *(line(r) for r in rows)]


def paired_verify_runs(report: Report) -> list[tuple[LoadResult, LoadResult]]:
    """Each service /verify run with the skeleton run of the same profile, client count and
    round (the n-th of each), when there is one."""
    paired: list[tuple[LoadResult, LoadResult]] = []
    for profile in PROFILES:
        for clients in sorted({r.clients for r in report.loads}):
            ours = [
                r
                for r in report.loads
                if r.profile == profile and r.clients == clients and r.endpoint == "/verify"
            ]
            theirs = [r for r in report.skeleton if r.profile == profile and r.clients == clients]
            paired += zip(ours, theirs, strict=False)
    return paired


def rounds_rows(report: Report) -> list[list[str]]:
    """Median figures per profile and client count where /verify ran more than one round."""
    groups: dict[tuple[str, int], list[tuple[LoadResult, LoadResult]]] = {}
    for ours, reference in paired_verify_runs(report):
        groups.setdefault((ours.profile.name, ours.clients), []).append((ours, reference))
    rows = []
    for (name, clients), runs in groups.items():
        if len(runs) < 2:
            continue
        ratios = [o.rps / t.rps for o, t in runs if t.rps]
        rows.append(
            [
                name,
                str(clients),
                str(len(runs)),
                f"{statistics.median(o.rps for o, _ in runs):,.0f}",
                f"{statistics.median(o.ratio for o, _ in runs):.0%}",
                f"{statistics.median(t.rps for _, t in runs):,.0f}",
                f"{statistics.median(t.ratio for _, t in runs):.0%}",
                f"{statistics.median(ratios):.0%}" if ratios else "",
                f"{min(ratios):.0%}-{max(ratios):.0%}" if ratios else "",
            ]
        )
    return rows


def summary(report: Report, header: str) -> str:
    """The final summary as text: one section per kind of figure."""
    lines = ["=" * 100, header, "=" * 100, ""]
    for section in (
        hash_costs_section,
        http_section,
        rounds_section,
        commands_section,
        memory_section,
        stderr_section,
    ):
        lines += section(report)
    return "\n".join(lines) + "\n"


def hash_costs_section(report: Report) -> list[str]:
    """argon2id per hash, per profile, and the ceiling it sets."""
    lines: list[str] = []
    lines.append(
        "argon2id per hash, in-process (median), at the start of each profile; ceiling = cores / "
        "hash time"
    )
    rows = []
    for profile in PROFILES:
        cost = report.costs.get(profile.name)
        if cost is not None:
            rows.append(
                [
                    profile.name,
                    profile.label,
                    f"{cost.hash_s * 1000:.3f}",
                    f"{cost.verify_s * 1000:.3f}",
                    f"{cost.ceiling_rps:,.0f}",
                    f"{cost.parallel_rps:,.0f}",
                ]
            )
    lines += table(
        ["profile", "parameters", "hash ms", "verify ms", "ceiling/s", f"{CORES} threads/s"],
        rows,
    )
    return lines


def http_section(report: Report) -> list[str]:
    """Every wrk run: throughput, its share of the ceiling and of the skeleton, latency."""
    lines: list[str] = []
    lines += [
        "",
        "HTTP, driven by wrk: successful responses/s, latency, non-2xx responses "
        "(skeleton: the reference app, bench/skeleton.py)",
        "Each run's ceiling comes from argon2 timed right before and right after it (hash ms: "
        "the mean of the two medians), as argon2's speed here drifts from minute to minute.",
    ]
    pairs = {id(ours): reference for ours, reference in paired_verify_runs(report)}
    rows = []
    for r in [*report.loads, *report.skeleton, *report.floor]:
        reference = pairs.get(id(r))
        of_skeleton = f"{r.rps / reference.rps:.0%}" if reference and reference.rps else ""
        rows.append(
            [
                r.profile.name,
                r.endpoint,
                str(r.clients),
                f"{r.rps:,.0f}",
                f"{r.cost.hash_s * 1000:.3f}",
                f"{r.ratio:.0%}",
                f"{r.rps / r.cost.parallel_rps:.0%}",
                of_skeleton,
                f"{r.latency_ms['p50']:.1f}",
                f"{r.latency_ms['p99']:.1f}",
                f"{r.requests:,}",
                f"{r.service_cpu_ms:.2f}",
                f"{r.other_load:.2f}",
                r.failures(),
                r.target(),
            ]
        )
    lines += table(
        [
            "profile",
            "endpoint",
            "clients",
            "req/s",
            "hash ms",
            "of ceil",
            f"of {CORES}-thr",
            "of skeleton",
            "p50 ms",
            "p99 ms",
            "requests",
            "svc CPU ms/req",
            "other load",
            "non-2xx / errors",
            "/verify target",
        ],
        rows,
    )
    return lines


def rounds_section(report: Report) -> list[str]:
    """The alternating service and skeleton /verify rounds (``--rounds``), if any."""
    lines: list[str] = []
    rounds = rounds_rows(report)
    if rounds:
        lines += [
            "",
            "/verify, service and skeleton alternating (--rounds): medians over the rounds; "
            "service/skeleton is the median of each round's ratio, with its range",
        ]
        lines += table(
            [
                "profile",
                "clients",
                "rounds",
                "service req/s",
                "of ceil",
                "skeleton req/s",
                "of ceil",
                "service/skeleton",
                "range",
            ],
            rounds,
        )
    return lines


def commands_section(report: Report) -> list[str]:
    """Redis commands per request, if measured."""
    lines: list[str] = []
    if report.commands:
        lines += ["", "Redis commands per request (INFO commandstats around a batch)"]
        rows = [
            [
                c.endpoint,
                str(c.requests),
                f"{c.round_trips / c.requests:.2f}",
                f"{c.in_scripts / c.requests:.2f}",
                c.failures,
            ]
            for c in report.commands
        ]
        lines += table(
            ["endpoint", "requests", "round trips/req", "in-script cmds/req", "failures"], rows
        )
        for c in report.commands:
            lines.append(
                f"  {c.endpoint}: "
                + ", ".join(f"{k} {v / c.requests:.2f}" for k, v in c.by_command.items())
            )
    return lines


def memory_section(report: Report) -> list[str]:
    """Redis memory per live challenge, if measured."""
    lines: list[str] = []
    if report.memory is not None:
        m = report.memory
        lines += [
            "",
            f"Redis memory per live challenge ({m.challenges:,} challenges on distinct numbers, "
            f"profile {m.profile}, failures {m.failures})",
            f"  used_memory growth:   {m.per_challenge:,.0f} B per challenge",
            f"  sum of MEMORY USAGE:  {m.usage_per_challenge:,.0f} B per challenge",
        ]
        for kind, u in m.usage_by_kind.items():
            per = u.bytes / max(m.challenges, 1)
            encodings = ", ".join(f"{e} {n:,}" for e, n in sorted(u.encodings.items()))
            longest = f"; longest value {u.longest_value} B" if u.longest_value else ""
            lines.append(
                f"    {kind:<16} {u.keys:>6,} keys  {per:>6,.0f} B per challenge  "
                f"(encoding: {encodings}{longest})"
            )
        lines.append(
            f"  (Redis hash-max-listpack-value = {m.listpack_value_limit}: a hash with a longer "
            "value is stored as a hashtable, several times larger)"
        )
    return lines


def stderr_section(report: Report) -> list[str]:
    """The service's log lines by level, and its warnings, errors and notes."""
    lines: list[str] = []
    lines += ["", "Service stderr (log lines by level; warnings/errors/tracebacks, deduplicated)"]
    for name, (levels, problems) in report.stderr.items():
        counts = ", ".join(f"{k} {v}" for k, v in sorted(levels.items())) or "empty"
        lines.append(f"  {name}: {counts}")
        shown = dict.fromkeys(re.sub(r"\d{4}-\d\d-\d\d[ T][\d:,.]+", "<time>", p) for p in problems)
        for problem in list(shown)[:5]:
            lines.append(f"    {problem[:150]}")
    if report.notes:
        lines += ["", "Notes"] + [f"  - {note}" for note in report.notes]
    return lines
