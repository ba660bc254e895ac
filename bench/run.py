"""otpservice benchmark: argon2 cost, HTTP throughput and latency, Redis memory and round trips.

Run ``uv run python -m bench.run [--quick]``. It starts its own ``redis-server`` on a free
loopback port and, for each argon2 profile, its own ``otpservice serve`` (console SMS: its
stdout tells the code of every challenge), drives it with ``wrk`` and ``bench/otp.lua``, and
prints figures; nothing is asserted. The summary also goes to ``bench/results/latest.txt``.
See ``bench/README.md`` for what each figure means.
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis

from bench.figures import (
    PROFILES,
    CommandFigures,
    HashCost,
    KindUsage,
    LoadResult,
    MemoryFigures,
    Profile,
    Report,
    key_kind,
    measure_hash,
    summary,
)
from bench.harness import (
    BENCH_DIR,
    BLOCK_FIRST,
    CORES,
    CallTally,
    CpuMeter,
    NumberBlocks,
    Otpservice,
    RedisProcess,
    Service,
    ServiceConfig,
    SkeletonProcess,
    create_challenges,
    phones,
    run_wrk,
    verify_pairs,
    wait_for_quiet,
    wrk_threads,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Sequence

    from bench.harness import CpuUse

RESULTS_FILE = BENCH_DIR / "results" / "latest.txt"
CLIENT_COUNTS = (8, 64)
# Pairs handed to a /verify run: this many times the best rate seen so far, times the duration.
PAIRS_MARGIN = 1.6
# Pairs for a /verify run are sized for at least the argon2 ceiling, capped at this rate (the
# cap is what hashing "off" is sized by; a run that exceeds it runs out, and says so).
VERIFY_RATE_CAP = 3000
# Keys of each kind whose values are read for the longest-value figure.
SAMPLED_KEYS = 50
# Before each wrk run, wait for the rest of the machine to use less than this many cores.
QUIET_CORES = 0.25
# A run during which other processes used this many cores is run again, RERUNS times at most;
# the run least disturbed is kept.
DISTURBED_CORES = 0.3
RERUNS = 2
# Commands the service sends itself; every other command in commandstats ran inside a script.
CLIENT_COMMANDS = ("evalsha", "eval", "evalsha_ro", "eval_ro", "script", "client", "hello")
# Commands this script sends; left out of the counts.
BENCH_COMMANDS = ("info", "config", "flushall", "ping", "scan", "memory")


@dataclass(frozen=True)
class Options:
    """How long and how big the run is."""

    quick: bool
    duration_s: int
    hash_runs: int
    parallel_hash_s: float
    memory_challenges: int
    roundtrip_requests: int
    create_concurrency: int
    settle_s: float
    quiet_wait_s: float
    log_level: str
    max_concurrent: int | None
    workers: int
    redis_profile: str
    profiles: tuple[Profile, ...]
    keep_workdir: bool
    skeleton: bool
    floor: bool
    rounds: int
    source: Path

    @classmethod
    def parse(cls, argv: Sequence[str] | None) -> Options:
        """Full or ``--quick`` sizes, with command-line overrides."""
        parser = _parser()
        args = parser.parse_args(argv)
        by_name = {p.name: p for p in PROFILES}
        names = [n.strip() for n in args.profiles.split(",") if n.strip()]
        unknown = [n for n in names if n not in by_name]
        if unknown or not names:
            parser.error(f"unknown profile(s) {unknown}; choose from {sorted(by_name)}")
        if args.rounds < 1:
            parser.error("--rounds must be at least 1")
        if args.floor and args.no_skeleton:
            parser.error("--floor runs beside the skeleton: drop --no-skeleton")
        quick = bool(args.quick)
        return cls(
            quick=quick,
            duration_s=args.duration or (3 if quick else 10),
            hash_runs=20 if quick else 50,
            parallel_hash_s=1.0 if quick else 3.0,
            memory_challenges=500 if quick else 2000,
            roundtrip_requests=50 if quick else 200,
            create_concurrency=16,
            settle_s=1.0 if quick else 2.0,
            quiet_wait_s=args.quiet_wait if args.quiet_wait is not None else (10 if quick else 60),
            log_level=args.log_level,
            max_concurrent=args.max_concurrent,
            workers=args.workers,
            redis_profile=args.redis_profile,
            profiles=tuple(by_name[n] for n in names),
            keep_workdir=args.keep_workdir,
            skeleton=not args.no_skeleton,
            floor=bool(args.floor),
            rounds=args.rounds,
            source=Path(args.source).resolve(),
        )


def _parser() -> argparse.ArgumentParser:
    """The command line: sizes, the service's settings, what to run beside it."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs (a smoke test)")
    parser.add_argument("--duration", type=int, help="seconds per wrk run (10; quick 3)")
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="the service's log_level setting (default info, the service default)",
    )
    parser.add_argument(
        "--max-concurrent",
        type=int,
        help="the service's hashing.max_concurrent (default: unset, one per core)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="the service's worker processes (serve --workers; default 1)",
    )
    parser.add_argument(
        "--profiles",
        default=",".join(p.name for p in PROFILES),
        help="comma-separated argon2 profiles to run (default: all)",
    )
    parser.add_argument(
        "--redis-profile",
        default="off",
        help="profile under which Redis memory and round trips are measured (default off)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        help="seconds to wait, before each wrk run, for other processes to go under "
        f"{QUIET_CORES} cores (default 60; quick 10)",
    )
    parser.add_argument(
        "--source",
        default=str(BENCH_DIR.parent),
        help="directory to run `python -m otpservice` from, i.e. which checkout is "
        "benchmarked (default: this repository)",
    )
    parser.add_argument(
        "--no-skeleton",
        action="store_true",
        help="skip the reference skeleton's /verify runs (bench/skeleton.py)",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also run the skeleton without Redis (HTTP and the hash only: the floor), "
        "after each skeleton run with --rounds, else after all of them",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="/verify runs per client count; with more than one, the service's and the "
        "skeleton's (and the floor's) runs alternate, all up, and the summary adds their "
        "medians (default 1; with --no-skeleton, the service's runs only, no medians)",
    )
    parser.add_argument(
        "--keep-workdir",
        action="store_true",
        help="keep the temporary directory (configs, service stdout and stderr)",
    )
    return parser


def say(text: str) -> None:
    """A progress line."""
    print(text, flush=True)


class ProfileBench:
    """All HTTP and Redis measurements of one profile, against a fresh service."""

    def __init__(
        self,
        profile: Profile,
        options: Options,
        store: RedisProcess,
        workdir: Path,
        numbers: NumberBlocks,
        report: Report,
        otpservice: Otpservice,
    ) -> None:
        self.otpservice = otpservice
        self.profile = profile
        self.options = options
        self.store = store
        self.workdir = workdir
        self.numbers = numbers
        self.report = report
        self.cost = report.costs[profile.name]

    def run(self) -> None:
        """Start the service, measure, stop it, keep what it wrote to stderr."""
        name, options = self.profile.name, self.options
        self.store.client.flushall()
        self.numbers.reset()  # Redis is empty: every number is unused again
        config = ServiceConfig(
            redis_url=self.store.url,
            memory_kib=self.profile.memory_kib,
            time_cost=self.profile.time_cost,
            parallelism=self.profile.parallelism,
            log_level=options.log_level,
            max_concurrent=options.max_concurrent,
            workers=options.workers,
            acknowledge_console=self.otpservice.acknowledge_console,
            acknowledge_weak_limits=self.otpservice.acknowledge_weak_limits,
            provider_list=self.otpservice.provider_list,
            outbox_key=self.otpservice.outbox_key,
        )
        service = Service(self.workdir, name, config, self.otpservice.source)
        # With rounds, the skeleton (and the floor) are up beside the service and their /verify
        # runs alternate, so all see the same minutes of this VM's drifting speed.
        alternate = options.skeleton and options.rounds > 1
        with contextlib.ExitStack() as running:  # closed last in, first out; also on errors
            running.callback(self.keep_stderr, service)
            running.callback(service.close)
            references = (
                [running.enter_context(self.reference(r)) for r in self.reference_kinds()]
                if alternate
                else []
            )
            say(f"[{name}] service up on {service.base_url}; warming up")
            self.warm_up(service)
            for clients in CLIENT_COUNTS:
                self.load(service, "/challenge", clients)
            for clients in CLIENT_COUNTS:
                for _ in range(options.rounds):
                    self.load(service, "/verify", clients)
                    for reference in references:
                        self.reference_run(reference, clients)
            if name == options.redis_profile:
                time.sleep(options.settle_s)
                self.report.commands += self.round_trips(service)
                self.report.memory = self.memory(service)
        if options.skeleton and not alternate:
            for redis_on in self.reference_kinds():
                with self.reference(redis_on) as reference:
                    for clients in CLIENT_COUNTS:
                        self.reference_run(reference, clients)

    def keep_stderr(self, service: Service) -> None:
        """What the stopped service wrote to stderr, for the summary."""
        levels, problems = service.stderr_levels(), service.stderr_problems()
        self.report.stderr[self.profile.name] = (dict(levels), problems)

    def reference_kinds(self) -> tuple[bool, ...]:
        """Which reference apps run, by whether they use Redis: the skeleton, then the floor
        (with ``--floor``)."""
        return (True, False) if self.options.floor else (True,)

    @contextlib.contextmanager
    def reference(self, redis_on: bool) -> Iterator[SkeletonProcess]:
        """The skeleton (``redis_on``) or the floor, hashing with this profile, on the same
        Redis; stopped on the way out."""
        profile = self.profile
        reference = SkeletonProcess(
            self.workdir,
            self.store.url,
            f"{profile.memory_kib},{profile.time_cost},{profile.parallelism}",
            self.options.workers,
            redis=redis_on,
        )
        try:
            say(f"[{profile.name}] {reference.name} up on {reference.base_url}")
            yield reference
        finally:
            reference.close()

    def reference_run(self, reference: SkeletonProcess, clients: int) -> None:
        """One wrk run of the skeleton's (or the floor's) /verify."""
        profile, report = self.profile, self.report
        count = self.pairs_needed(
            r.rps for r in [*report.loads, *report.skeleton, *report.floor] if r.profile == profile
        )
        # It checks no code: any id and code will do, each sent once like the pairs.
        pairs_file = self.workdir / f"{reference.name}-{profile.name}-{clients}.txt"
        pairs_file.write_text(
            "".join(f"s{n}.{secrets.token_urlsafe(12)} 123456\n" for n in range(count)),
            encoding="utf-8",
        )
        pids = (reference.process.pid, self.store.process.pid)
        self.settle_pids(pids)
        args = ["verify", str(pairs_file), str(wrk_threads(clients))]
        record, cpu, cost = self.timed_wrk(pids, reference.base_url, clients, args)
        result = LoadResult.from_wrk(
            record, profile, f"{reference.name} /verify", clients, cost, cpu, pairs=count
        )
        say(result.line())
        (report.skeleton if reference.redis else report.floor).append(result)

    def pairs_needed(self, rates: Iterable[float]) -> int:
        """Pairs for one /verify run: PAIRS_MARGIN x the duration x the best of ``rates`` (the
        profile's runs so far) or the argon2 ceiling, whichever is higher (the ceiling capped at
        VERIFY_RATE_CAP, which is what hashing "off" is sized by)."""
        best = max([min(self.cost.ceiling_rps, VERIFY_RATE_CAP), *rates])
        return int(best * PAIRS_MARGIN * self.options.duration_s) + 200

    def note(self, text: str) -> None:
        """Something the summary should mention."""
        self.report.notes.append(f"{self.profile.name}: {text}")

    def settle(self, service: Service) -> None:
        """Let queued work drain, then wait for the machine to be quiet (bounded)."""
        time.sleep(self.options.settle_s)
        self.settle_pids(self.pids(service))

    def pids(self, service: Service) -> tuple[int, int]:
        """The processes a run's CPU is metered over, besides this script and wrk."""
        return service.process.pid, self.store.process.pid

    def settle_pids(self, pids: tuple[int, ...]) -> None:
        """Wait for processes other than ``pids`` to be quiet (bounded)."""
        load = wait_for_quiet(pids, QUIET_CORES, self.options.quiet_wait_s)
        if load >= QUIET_CORES:
            say(f"[{self.profile.name}] other processes still use {load:.2f} cores; going on")

    def timed_wrk(
        self, pids: tuple[int, ...], base_url: str, clients: int, args: list[str]
    ) -> tuple[dict[str, Any], CpuUse, HashCost]:
        """One wrk run with its CPU use (``pids``: the server, then Redis), between two argon2
        timings: argon2's speed here drifts by 10-20 % within minutes, so each run is compared
        with the ceiling of its own minute, not of the profile's start."""
        runs = self.options.hash_runs
        before = measure_hash(self.profile, runs, parallel_s=0.0)
        meter = CpuMeter(pids)
        record = run_wrk(base_url, clients, self.options.duration_s, args)
        cpu = meter.stop()
        time.sleep(self.options.settle_s)  # the last requests finish
        after = measure_hash(self.profile, runs, parallel_s=0.0)
        return record, cpu, self.cost.around(before, after)

    def warm_up(self, service: Service) -> None:
        """A few challenges and verifications: scripts loaded, connections pooled."""
        tally = create_challenges(service, phones(self.numbers.take(), 40), concurrency=8)
        verified = verify_pairs(service, service.sms.take(40), concurrency=8)
        if tally.failures(201) != "-" or verified.failures(200) != "-":
            self.note(f"warm-up failures: {tally.failures(201)} / {verified.failures(200)}")

    def load(self, service: Service, endpoint: str, clients: int) -> None:
        """One wrk measurement; run again (RERUNS times at most) while others disturb it."""
        results: list[LoadResult] = []
        for attempt in range(1 + RERUNS):
            if endpoint == "/challenge":
                result = self.challenge_run(service, clients)
            else:
                result = self.verify_run(service, clients)
            results.append(result)
            say(result.line())
            if result.other_load < DISTURBED_CORES or attempt == RERUNS:
                break
            say(
                f"[{self.profile.name}] other processes used {result.other_load:.2f} cores "
                "during that run: once more"
            )
        kept = min(results, key=lambda r: r.other_load)
        self.report.loads.append(kept)
        if kept.other_load >= DISTURBED_CORES:
            self.note(
                f"{endpoint} c={clients}: other processes used {kept.other_load:.2f} cores even "
                f"in the least disturbed of {len(results)} runs: its figures are depressed"
            )
        if kept.exhausted:
            self.note(f"{endpoint} c={clients} ran out of pairs: its rate is a lower bound")

    def challenge_run(self, service: Service, clients: int) -> LoadResult:
        """wrk on POST /challenge, a new number per request (these also feed /verify later)."""
        self.settle(service)
        args = ["challenge", self.numbers.take(), str(BLOCK_FIRST)]
        record, cpu, cost = self.timed_wrk(self.pids(service), service.base_url, clients, args)
        return LoadResult.from_wrk(record, self.profile, "/challenge", clients, cost, cpu)

    def verify_run(self, service: Service, clients: int) -> LoadResult:
        """wrk on POST /verify, each pre-created (challenge id, code) pair sent once."""
        options = self.options
        service.sms.poll()
        needed = self.pairs_needed(r.rps for r in self.report.loads if r.profile == self.profile)
        if service.sms.unused < needed:
            missing = needed - service.sms.unused
            say(f"[{self.profile.name}] pre-creating {missing:,} challenges with httpx")
            tally = create_challenges(
                service, phones(self.numbers.take(), missing), options.create_concurrency
            )
            if tally.failures(201) != "-":
                self.note(f"pre-creation failures: {tally.failures(201)}")
        # Their SMS are still being sent by the service's delivery worker: wait, or the run
        # would measure /verify and that delivery together (the skeleton sends nothing).
        wait_for_outbox(self.store.client, deadline_s=120)
        self.settle(service)
        service.sms.poll()
        pairs = service.sms.take(needed)
        pairs_file = self.workdir / f"pairs-{self.profile.name}-{clients}.txt"
        pairs_file.write_text("".join(f"{i} {c}\n" for i, c in pairs), encoding="utf-8")
        args = ["verify", str(pairs_file), str(wrk_threads(clients))]
        record, cpu, cost = self.timed_wrk(self.pids(service), service.base_url, clients, args)
        return LoadResult.from_wrk(
            record, self.profile, "/verify", clients, cost, cpu, pairs=len(pairs)
        )

    def round_trips(self, service: Service) -> list[CommandFigures]:
        """Redis commands per /challenge and per /verify, over a batch of each."""
        count = self.options.roundtrip_requests
        numbers = phones(self.numbers.take(), count)
        created = self.count_commands(
            "/challenge", count, lambda: create_challenges(service, numbers, concurrency=4)
        )
        service.sms.poll()
        pairs = service.sms.take(count)
        verified = self.count_commands(
            "/verify", len(pairs), lambda: verify_pairs(service, pairs, concurrency=4)
        )
        for f in (created, verified):
            say(
                f"[{self.profile.name}] {f.endpoint}: {f.round_trips / f.requests:.2f} round "
                f"trips, {f.in_scripts / f.requests:.2f} in-script commands per request"
            )
        return [created, verified]

    def count_commands(
        self, endpoint: str, requests: int, batch: Callable[[], CallTally]
    ) -> CommandFigures:
        """``INFO commandstats`` calls made while ``batch`` ran, split by who sent them."""
        self.store.client.config_resetstat()
        tally = batch()
        counts: dict[str, int] = {}
        for stat, values in self.store.info("commandstats").items():
            command = stat.removeprefix("cmdstat_")
            if command.split("|")[0] not in BENCH_COMMANDS:
                counts[command] = int(values["calls"])
        round_trips = sum(n for c, n in counts.items() if c.split("|")[0] in CLIENT_COMMANDS)
        return CommandFigures(
            endpoint=endpoint,
            requests=max(requests, 1),
            round_trips=round_trips,
            in_scripts=sum(counts.values()) - round_trips,
            by_command=dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))),
            failures=tally.failures(201 if endpoint == "/challenge" else 200),
        )

    def memory(self, service: Service) -> MemoryFigures:
        """Challenges on distinct numbers into an emptied Redis: growth per challenge."""
        client = self.store.client
        client.flushall()
        service.sms.forget()
        time.sleep(0.2)
        before = int(self.store.info("memory")["used_memory"])
        count = self.options.memory_challenges
        tally = create_challenges(service, phones(self.numbers.take(), count), concurrency=8)
        # What a live challenge keeps once its SMS is out: the outbox entry is gone by then.
        wait_for_outbox(client, deadline_s=30)
        after = int(self.store.info("memory")["used_memory"])
        usage: dict[str, KindUsage] = {}
        raw = redis.Redis(host="127.0.0.1", port=self.store.port)  # values may be binary
        try:
            for key in raw.scan_iter(count=1000):
                kind = usage.setdefault(key_kind(key.decode(errors="replace")), KindUsage())
                kind.keys += 1
                kind.bytes += int(raw.memory_usage(key, samples=0) or 0)
                kind.encodings[raw.object("encoding", key).decode()] += 1
                if kind.keys <= SAMPLED_KEYS:
                    kind.longest_value = max(kind.longest_value, longest_value(raw, key))
        finally:
            raw.close()
        limit = client.config_get("hash-max-listpack-value").get("hash-max-listpack-value", "?")
        figures = MemoryFigures(
            profile=self.profile.name,
            challenges=tally.count(201),
            failures=tally.failures(201),
            used_memory_delta=after - before,
            usage_by_kind=dict(sorted(usage.items())),
            listpack_value_limit=str(limit),
        )
        say(
            f"[{self.profile.name}] memory: {figures.per_challenge:,.0f} B per challenge "
            f"(used_memory), {figures.usage_per_challenge:,.0f} B (MEMORY USAGE)"
        )
        return figures


def wait_for_outbox(client: redis.Redis, deadline_s: float) -> None:
    """Wait until the service's delivery workers have emptied the outbox (if it has one)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        keys = list(client.scan_iter(match="*:{outbox*}:stream"))
        if not keys or all(int(client.xlen(k)) == 0 for k in keys):
            return
        time.sleep(0.1)
    say("outbox: still not empty; the memory figures include queued messages")


def hash_cost(profile: Profile, options: Options) -> tuple[float, HashCost]:
    """argon2 timing, measured again (RERUNS times at most) while other processes disturb it.

    Returns the least disturbed measurement and the other processes' load (cores) during it.
    """
    measured: list[tuple[float, HashCost]] = []
    for attempt in range(1 + RERUNS):
        load = wait_for_quiet((), QUIET_CORES, options.quiet_wait_s)
        if load >= QUIET_CORES:
            say(f"other processes still use {load:.2f} cores; going on")
        meter = CpuMeter()
        cost = measure_hash(profile, options.hash_runs, options.parallel_hash_s)
        use = meter.stop()
        measured.append((use.other_s / use.wall_s, cost))
        if measured[-1][0] < DISTURBED_CORES or attempt == RERUNS:
            break
        say(
            f"[{profile.name}] other processes used {measured[-1][0]:.2f} cores while timing "
            "argon2: once more"
        )
    return min(measured, key=lambda m: m[0])


def longest_value(client: redis.Redis, key: bytes) -> int:
    """Length in bytes of the longest value of a hash or string key (0 for other types)."""
    kind = client.type(key)
    if kind == b"hash":
        return max((len(v) for v in client.hvals(key)), default=0)
    if kind == b"string":
        return int(client.strlen(key))
    return 0


@contextlib.contextmanager
def terminate_as_exit() -> Iterator[None]:
    """Turn SIGTERM into SystemExit while running, so ``finally`` blocks stop the children."""

    def handler(signum: int, _: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print the summary and write it to ``bench/results/latest.txt``."""
    options = Options.parse(argv)
    started = time.monotonic()
    report = Report()
    for profile in options.profiles:
        load, cost = hash_cost(profile, options)
        report.costs[profile.name] = cost
        if load >= DISTURBED_CORES:
            report.notes.append(
                f"{profile.name}: other processes used {load:.2f} cores while argon2 was timed: "
                "its hash time and threads/s are off"
            )
        say(
            f"[{profile.name}] argon2 hash {cost.hash_s * 1000:.3f} ms (median of "
            f"{options.hash_runs}): ceiling {cost.ceiling_rps:,.0f}/s on {CORES} cores; "
            f"{CORES} threads measured {cost.parallel_rps:,.0f}/s"
        )

    otp = Otpservice.probe(options.source)
    say(f"otpservice {otp.version} from {otp.module_path}")
    numbers = NumberBlocks()
    workdir = Path(tempfile.mkdtemp(prefix="otp-bench-"))
    store: RedisProcess | None = None
    try:
        with terminate_as_exit():
            store = RedisProcess(workdir)
            say(f"redis-server on 127.0.0.1:{store.port}")
            for profile in options.profiles:
                bench = ProfileBench(profile, options, store, workdir, numbers, report, otp)
                try:
                    bench.run()
                except Exception as exc:  # one broken profile must not lose the others
                    first_lines = "; ".join(str(exc).strip().splitlines()[-3:])
                    say(f"[{profile.name}] FAILED: {type(exc).__name__}: {first_lines}")
                    bench.note(f"FAILED: {type(exc).__name__}: {first_lines}")
    finally:
        if store is not None:
            store.close()
        if options.keep_workdir:
            say(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    header = (
        f"otpservice benchmark {time.strftime('%Y-%m-%d %H:%M:%S')}: "
        f"{'quick' if options.quick else 'full'} run, {CORES} cores, wrk runs of "
        f"{options.duration_s} s, log_level={options.log_level}, hashing.max_concurrent="
        f"{options.max_concurrent if options.max_concurrent is not None else 'default'}, "
        f"workers={options.workers}, rounds={options.rounds}, floor={options.floor}, "
        f"took {time.monotonic() - started:.0f} s\n"
        f"otpservice {otp.version} from {otp.module_path}"
    )
    text = summary(report, header)
    print("\n" + text, end="")
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(text, encoding="utf-8")
    print(f"(summary written to {RESULTS_FILE.relative_to(BENCH_DIR.parent)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
