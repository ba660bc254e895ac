"""One Redis against a Redis Cluster, with two service processes: rates, latency, CPU, spread.

    uv run python -m bench.cluster                    # 3 alternating rounds of 6 s runs
    uv run python -m bench.cluster --rounds 3 --duration 10
    uv run python -m bench.cluster --challenge-rate 250 --verify-rate 400   # equal, paced load

Starts its own ``redis-server`` and its own Redis Cluster (three masters, each with a replica),
and beside each two ``otpservice serve`` processes (hashing effectively off, m=8 KiB: what is
measured is everything but argon2). Rounds alternate between the two stores, so both see the
same minutes of this VM's drifting speed. In each round: ``wrk`` POSTs ``/challenge`` to both
processes at once (new numbers), then ``/verify`` (each pair once, a third as long). It prints
requests/s, p50/p99 latency (the slower process's) and the services' CPU per request (delivery
workers included), with medians over the rounds and the ratio cluster / one Redis; the commands
each master served during the ``/challenge`` runs (spread: max / mean); and round trips per
request with ``redis.min_replicas_acked`` 0 and 1 on the cluster. Prints figures only.

By default each wrk connection sends as fast as it is answered, so each store runs at its own
top rate. With ``--challenge-rate`` and ``--verify-rate`` (requests a second per process) both
stores get the same paced load, below either's top rate: the service then does the same work
in both, and its CPU per request compares the cost of each store's path, not two load levels
(a process at a lower rate batches less per event-loop pass, and pays more per request).
With ``--pin`` the service processes run on the first CPU and everything else (the Redis
servers, wrk, this script) on the others, as when Redis has machines of its own: the service's
CPU then leaves out what six Redis servers competing for its cores cost it (being preempted,
caches lost, waking a server for every write).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from bench.harness import (
    BLOCK_FIRST,
    NumberBlocks,
    Otpservice,
    RedisProcess,
    Service,
    ServiceConfig,
    create_challenges,
    free_port,
    phones,
    run_wrk,
    stop_process,
    verify_pairs,
    wrk_threads,
)

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = 16  # wrk connections per service process
# Client commands (one round trip each); the rest of INFO commandstats ran inside scripts.
ROUND_TRIP_COMMANDS = ("evalsha", "eval", "wait", "xadd", "xreadgroup", "xautoclaim", "set")


class ClusterProcesses:
    """Redis servers joined into one cluster: three masters, ``replicas`` replicas each."""

    def __init__(self, workdir: Path, replicas: int = 1) -> None:
        server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if server is None or cli is None:
            raise SystemExit("redis-server and redis-cli are needed (apt-get install redis-server)")
        self.ports = [_cluster_port() for _ in range(3 * (1 + replicas))]
        self.processes: list[subprocess.Popen[bytes]] = []
        for port in self.ports:
            directory = workdir / f"cluster-{port}"
            directory.mkdir()
            self.processes.append(
                subprocess.Popen(
                    [
                        server,
                        "--port",
                        str(port),
                        "--bind",
                        "127.0.0.1",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--dir",
                        str(directory),
                        "--cluster-enabled",
                        "yes",
                        "--cluster-node-timeout",
                        "5000",
                        "--cluster-require-full-coverage",
                        "no",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        for port in self.ports:
            _wait_for(redis.Redis(port=port).ping)
        nodes = [f"127.0.0.1:{p}" for p in self.ports]
        subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *nodes,
                "--cluster-replicas",
                str(replicas),
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        _wait_for(self._ready)
        self.url = f"redis://127.0.0.1:{self.ports[0]}/0"

    def _ready(self) -> bool:
        for port in self.ports:
            client = redis.Redis(port=port)
            info = client.execute_command("CLUSTER", "INFO")  # type: ignore[no-untyped-call]
            text = info.decode() if isinstance(info, bytes) else str(info)
            if "cluster_state:ok" not in text:
                return False
            replication = client.info("replication")
            if replication["role"] == "slave" and replication["master_link_status"] != "up":
                return False
        return True

    def masters(self) -> list[redis.Redis]:
        """A client of each master."""
        clients = [redis.Redis(port=port) for port in self.ports]
        return [c for c in clients if c.info("replication")["role"] == "master"]

    def close(self) -> None:
        for process in self.processes:
            stop_process(process)


def _cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is a valid port and free too."""
    while True:
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def _wait_for(ready: Callable[[], Any], deadline_s: float = 30.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            if ready():
                return
        except redis.RedisError:
            pass
        time.sleep(0.1)
    raise SystemExit("a Redis server did not become ready")


@dataclass(frozen=True)
class Run:
    """One endpoint's wrk run on both processes at once."""

    store: str
    endpoint: str
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_ms_per_request: float
    ran_out: bool = False  # a /verify run used up its pairs: its rate is a lower bound


def both(services: list[Service], args_for: Callable[[int], list[str]], duration_s: int) -> Run:
    """wrk on every service at once; the sum of their rates, the slower one's latency."""
    records: list[dict[str, Any]] = [{} for _ in services]
    cpu_before = [s.cpu_s() for s in services]

    def drive(index: int) -> None:
        records[index] = run_wrk(services[index].base_url, CLIENTS, duration_s, args_for(index))

    threads = [threading.Thread(target=drive, args=(i,)) for i in range(len(services))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    time.sleep(0.5)  # the last requests finish
    cpu = sum(s.cpu_s() - before for s, before in zip(services, cpu_before, strict=True))
    requests = sum(int(r["requests"]) for r in records)
    return Run(
        store="",
        endpoint="",
        rps=sum(r["requests"] / (r["duration_us"] / 1e6) for r in records),
        p50_ms=max(r["latency_us"]["p50"] for r in records) / 1000,
        p99_ms=max(r["latency_us"]["p99"] for r in records) / 1000,
        cpu_ms_per_request=cpu * 1000 / max(requests, 1),
        ran_out=any(r["exhausted_threads"] > 0 for r in records),
    )


class Bench:
    def __init__(self, workdir: Path, options: argparse.Namespace) -> None:
        self.workdir = workdir
        self.options = options
        self.numbers = NumberBlocks()
        self.otpservice = Otpservice.probe(ROOT)
        self.pairs_files = 0

    def services(self, store: str, url: str, redis_toml: str) -> list[Service]:
        config = ServiceConfig(
            redis_url=url,
            memory_kib=8,
            time_cost=1,
            parallelism=1,
            log_level="warning",
            acknowledge_console=True,
            acknowledge_weak_limits=self.otpservice.acknowledge_weak_limits,
            provider_list=True,
            outbox_key=True,
            redis_toml=redis_toml,
            extra_toml="[outbox]\nworkers_in_process = false\n" if self.options.no_workers else "",
        )
        return [
            Service(self.workdir, f"{store}-{i}", config, self.otpservice.source) for i in range(2)
        ]

    def challenge(self, store: str, services: list[Service]) -> Run:
        prefixes = [self.numbers.take() for _ in services]
        pace = _pace(self.options.challenge_rate)
        run = both(
            services,
            lambda i: ["challenge", prefixes[i], str(BLOCK_FIRST), *pace],
            self.options.duration,
        )
        return Run(store, "/challenge", run.rps, run.p50_ms, run.p99_ms, run.cpu_ms_per_request)

    def verify(self, store: str, services: list[Service]) -> Run:
        time.sleep(2)  # the SMS of the /challenge run are out
        files = []
        for service in services:
            service.sms.poll()
            pairs = service.sms.take(service.sms.unused)
            self.pairs_files += 1
            path = self.workdir / f"pairs-{self.pairs_files}.txt"
            path.write_text("".join(f"{i} {c}\n" for i, c in pairs), encoding="utf-8")
            files.append(path)
        # Shorter than the /challenge run that made the pairs, so that they last.
        pace = _pace(self.options.verify_rate)
        run = both(
            services,
            lambda i: ["verify", str(files[i]), str(wrk_threads(CLIENTS)), *pace],
            max(1, self.options.duration // 3),
        )
        return Run(
            store, "/verify", run.rps, run.p50_ms, run.p99_ms, run.cpu_ms_per_request, run.ran_out
        )

    def round_trips(self, cluster: ClusterProcesses, services: list[Service]) -> dict[str, float]:
        """Client commands per /challenge and per /verify over a batch, all masters summed."""
        figures: dict[str, float] = {}
        count = 200
        for endpoint in ("/challenge", "/verify"):
            masters = cluster.masters()
            for master in masters:
                master.config_resetstat()
            service = services[0]
            requests = count
            if endpoint == "/challenge":
                create_challenges(service, phones(self.numbers.take(), count), concurrency=4)
                time.sleep(2)  # their SMS go out (counted: delivery is part of a challenge)
            else:
                service.sms.poll()
                pairs = service.sms.take(count)
                requests = len(pairs)
                verify_pairs(service, pairs, concurrency=4)
            calls = 0
            for master in masters:
                for stat, values in master.info("commandstats").items():
                    name = stat.removeprefix("cmdstat_").split("|")[0]
                    if name in ROUND_TRIP_COMMANDS:
                        calls += int(values["calls"])
            figures[endpoint] = calls / max(requests, 1)
        return figures


def _pin(services: list[Service], cpus: set[int]) -> None:
    """Move every thread of the services' processes to ``cpus``."""
    for service in services:
        for thread in os.listdir(f"/proc/{service.process.pid}/task"):
            os.sched_setaffinity(int(thread), cpus)


def _pace(rate: float | None) -> list[str]:
    """otp.lua's pacing argument for ``rate`` requests a second per process (none: unpaced)."""
    return [] if rate is None else [str(rate / wrk_threads(CLIENTS))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=6, help="seconds per /challenge run")
    parser.add_argument(
        "--no-workers",
        action="store_true",
        help="the services run no delivery workers: the request path alone",
    )
    parser.add_argument(
        "--challenge-rate",
        type=float,
        help="paced /challenge requests a second per service process (default: unpaced)",
    )
    parser.add_argument(
        "--verify-rate",
        type=float,
        help="paced /verify requests a second per service process (default: unpaced)",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="the services on the first CPU, the Redis servers and wrk on the others",
    )
    parser.add_argument(
        "--replicas",
        type=int,
        choices=(0, 1),
        default=1,
        help="replicas per master of the cluster (0: what replication costs the box)",
    )
    options = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    cpus = sorted(os.sched_getaffinity(0))
    if options.pin:
        if len(cpus) < 2:
            raise SystemExit("--pin needs two CPUs or more")
        os.sched_setaffinity(0, set(cpus[1:]))  # inherited by the Redis servers and wrk
    with tempfile.TemporaryDirectory(prefix="otp-bench-cluster-") as name:
        workdir = Path(name)
        (workdir / "single").mkdir()
        single = RedisProcess(workdir / "single")
        cluster = ClusterProcesses(workdir, options.replicas)
        bench = Bench(workdir, options)
        fleets: dict[str, list[Service]] = {}
        try:
            fleets["one Redis"] = bench.services("single", single.url, "")
            fleets["cluster"] = bench.services("cluster", cluster.url, "cluster = true")
            if options.pin:
                for fleet in fleets.values():
                    _pin(fleet, {cpus[0]})
            runs: list[Run] = []
            spread: list[float] = []
            for round_number in range(options.rounds):
                order = list(fleets) if round_number % 2 == 0 else list(reversed(fleets))
                for store in order:
                    if store == "cluster":
                        for master in cluster.masters():
                            master.config_resetstat()
                    runs.append(bench.challenge(store, fleets[store]))
                    if store == "cluster":
                        served = [
                            sum(int(v["calls"]) for v in m.info("commandstats").values())
                            for m in cluster.masters()
                        ]
                        spread.append(max(served) / statistics.mean(served))
                    runs.append(bench.verify(store, fleets[store]))
                    for run in runs[-2:]:
                        print(
                            f"round {round_number + 1} {store:9} {run.endpoint:10} "
                            f"{run.rps:7.0f} req/s  p50 {run.p50_ms:6.1f} ms  "
                            f"p99 {run.p99_ms:6.1f} ms  {run.cpu_ms_per_request:5.2f} ms CPU/req"
                            + ("  (ran out of pairs: a lower bound)" if run.ran_out else ""),
                            flush=True,
                        )
            report(runs, spread)
            for fleet in fleets.values():
                for service in fleet:
                    service.close()
            for acked in (0, 1) if options.replicas else (0,):
                services = bench.services(
                    f"acked{acked}", cluster.url, f"cluster = true\nmin_replicas_acked = {acked}"
                )
                try:
                    trips = bench.round_trips(cluster, services)
                finally:
                    for service in services:
                        service.close()
                print(
                    f"round trips per request on the cluster, min_replicas_acked = {acked}: "
                    + ", ".join(f"{e} {n:.2f}" for e, n in trips.items())
                )
        finally:
            for fleet in fleets.values():
                for service in fleet:
                    service.close()
            cluster.close()
            single.close()


def report(runs: list[Run], spread: list[float]) -> None:
    print("\nmedians over the rounds (two service processes, hashing off):")
    for endpoint in ("/challenge", "/verify"):
        medians = {}
        for store in ("one Redis", "cluster"):
            mine = [r for r in runs if r.store == store and r.endpoint == endpoint]
            medians[store] = Run(
                store,
                endpoint,
                statistics.median(r.rps for r in mine),
                statistics.median(r.p50_ms for r in mine),
                statistics.median(r.p99_ms for r in mine),
                statistics.median(r.cpu_ms_per_request for r in mine),
            )
            m = medians[store]
            print(
                f"  {endpoint:10} {store:9} {m.rps:7.0f} req/s  p50 {m.p50_ms:6.1f} ms  "
                f"p99 {m.p99_ms:6.1f} ms  {m.cpu_ms_per_request:5.2f} ms CPU/req"
            )
        one, many = medians["one Redis"], medians["cluster"]
        print(
            f"  {endpoint:10} cluster / one Redis: rate {many.rps / one.rps:.2f}, "
            f"service CPU per request {many.cpu_ms_per_request / one.cpu_ms_per_request:.2f}"
        )
    if spread:
        print(
            f"commands per master during /challenge: max / mean {statistics.median(spread):.2f} "
            f"(median of {len(spread)} runs)"
        )


if __name__ == "__main__":
    main()
