"""Outbox throughput: how fast delivery workers drain queued messages to a slow provider.

    uv run python -m bench.outbox                     # 600 messages, limits off and 100/s
    uv run python -m bench.outbox --messages 1000 --limits 0,50,200 --latency-ms 50

Starts its own ``redis-server``, a fake gateway (the ``generic`` provider) that answers every
message after ``--latency-ms``, and ``otpservice serve`` with its in-process workers off. It
queues ``--messages`` challenges through the API, then starts one ``otpservice worker`` and
times how long the gateway takes to receive them all (first arrival to last). For each sender
limit (``messages_per_second``; 0 = none) it prints messages/s and the most the gateway received
in any one-second window, which must not exceed the limit (plus its burst). Prints figures only.
"""

from __future__ import annotations

import argparse
import base64
import bisect
import json
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench.harness import (
    NumberBlocks,
    RedisProcess,
    Service,
    ServiceConfig,
    create_challenges,
    phones,
    stop_process,
)

ROOT = Path(__file__).resolve().parent.parent


class SlowGateway:
    """Answers each POST with 200 after ``latency_s``; remembers when each arrived."""

    def __init__(self, latency_s: float) -> None:
        self.arrivals: list[float] = []
        lock = threading.Lock()
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with lock:
                    gateway.arrivals.append(time.monotonic())
                time.sleep(latency_s)
                body = json.dumps({"id": secrets.token_hex(8)}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/send"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def busiest_second(arrivals: list[float]) -> int:
    """The most arrivals in any one-second window."""
    times = sorted(arrivals)
    return max((bisect.bisect_left(times, t + 1.0) - i for i, t in enumerate(times)), default=0)


def run_once(workdir: Path, redis: RedisProcess, limit: float, options: argparse.Namespace) -> str:
    gateway = SlowGateway(options.latency_ms / 1000)
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    rate = f"messages_per_second = {limit}\nburst = {options.burst}\n" if limit else ""
    config = ServiceConfig(
        redis_url=redis.url,
        memory_kib=8,
        time_cost=1,
        parallelism=1,
        log_level="warning",
        acknowledge_console=True,
        acknowledge_weak_limits=True,
        provider_list=True,
        outbox_key=True,
        sms_toml=(
            f'[[sms.providers]]\ntype = "generic"\nurl = "{gateway.url}"\n'
            f'secret = "{secret}"\ntimeout_seconds = 5\n{rate}'
        ),
        extra_toml=f"[outbox]\nworkers_in_process = false\nconcurrency = {options.concurrency}\n",
    )
    redis.client.flushall()
    name = f"outbox-{limit or 'nolimit'}"
    service = Service(workdir, name, config, ROOT)
    worker: subprocess.Popen[bytes] | None = None
    try:
        tally = create_challenges(
            service, phones(NumberBlocks().take(), options.messages), concurrency=16
        )
        queued = tally.count(201)
        with (workdir / f"{name}-worker.err").open("wb") as err:
            started = time.monotonic()
            command = ["-m", "otpservice", "worker", "--config", str(service.config_path)]
            worker = subprocess.Popen(
                [sys.executable, *command],
                stdout=subprocess.DEVNULL,
                stderr=err,
                stdin=subprocess.DEVNULL,
                cwd=ROOT,
            )
            deadline = started + options.timeout
            while len(gateway.arrivals) < queued and time.monotonic() < deadline:
                time.sleep(0.02)
        arrivals = list(gateway.arrivals)
        if not arrivals:
            return f"{'limit ' + str(limit) if limit else 'no limit':>14}: nothing arrived"
        # From the first arrival: the worker's own start-up (imports, connecting) is not sending.
        span = arrivals[-1] - arrivals[0]
        rate_seen = (len(arrivals) - 1) / span if span > 0 else 0.0
        return (
            f"{(str(limit) + '/s') if limit else 'none':>10}  {queued:>8,}  {len(arrivals):>9,}  "
            f"{span:>7.2f}  {rate_seen:>10,.0f}  {busiest_second(arrivals):>16,}"
        )
    finally:
        stop_process(worker)
        service.close()
        gateway.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=600)
    parser.add_argument("--limits", default="0,100", help="messages_per_second values; 0: none")
    parser.add_argument("--burst", type=int, default=1)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--concurrency", type=int, default=16, help="outbox.concurrency")
    parser.add_argument("--timeout", type=float, default=120.0)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="otp-outbox-bench-") as tmp:
        workdir = Path(tmp)
        redis = RedisProcess(workdir)
        try:
            rows = [run_once(workdir, redis, float(v), options) for v in options.limits.split(",")]
        finally:
            redis.close()
    print(
        f"\noutbox throughput: {options.messages} messages, gateway latency "
        f"{options.latency_ms:.0f} ms, one worker process, outbox.concurrency "
        f"{options.concurrency}, burst {options.burst}\n"
    )
    print(
        f"{'limit':>10}  {'queued':>8}  {'delivered':>9}  {'seconds':>7}  {'messages/s':>10}"
        f"  {'busiest second':>16}"
    )
    for row in rows:
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
