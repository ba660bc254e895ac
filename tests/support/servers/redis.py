"""Starts real redis-server processes on free loopback ports: one node, or a 3-master cluster."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

REDIS_SERVER = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")
MISSING = (
    "redis-server is not installed: the tests need a real Redis. "
    "Install it with `sudo apt-get install redis-server` (Debian/Ubuntu) or `brew install redis`."
)


# Servers listen below the kernel's ephemeral range (32768 and up on Linux), so no outgoing
# connection of another test can hold a chosen port by the time the server binds it.
_LISTEN_PORTS = range(10000, 32768)
# A cluster node also listens on its port + 10000 (the cluster bus): both must be free.
_CLUSTER_BUS_OFFSET = 10000


_START_ATTEMPTS = 5


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(*, cluster_bus: bool = False) -> int:
    """A TCP port on 127.0.0.1, below the ephemeral range, that nothing listens on right now.

    Under pytest-xdist each worker takes only ports of its own residue (port mod the worker
    count), so two workers never pick the same port in the moment between the check and the
    bind (a server that lost that race would answer pings with the other worker's server).
    With ``cluster_bus`` the port + 10000 is free too.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    top = _LISTEN_PORTS.stop - (_CLUSTER_BUS_OFFSET if cluster_bus else 0)
    while True:
        drawn = random.randrange(_LISTEN_PORTS.start, top)
        port = drawn - drawn % workers + worker
        if not _LISTEN_PORTS.start <= port < top or not _bindable(port):
            continue
        if cluster_bus and not _bindable(port + _CLUSTER_BUS_OFFSET):
            continue
        return port


def _wait_for_ping(
    port: int, process: subprocess.Popen[bytes] | None = None, deadline_s: float = 10.0
) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"redis-server on port {port} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                # A server with a password answers NOAUTH: it is up all the same.
                if sock.recv(16).startswith((b"+PONG", b"-NOAUTH")):
                    return
        except OSError:
            pass
        time.sleep(0.02)
    raise RuntimeError(f"redis-server on port {port} did not start")


class RedisServer:
    """One redis-server on a free loopback port, with its files in a temporary directory."""

    def __init__(
        self, *extra_args: str, port: int | None = None, cluster_bus: bool = False
    ) -> None:
        if REDIS_SERVER is None:
            raise RuntimeError(MISSING)
        self.dir = Path(tempfile.mkdtemp(prefix="otp-redis-"))
        self._extra_args = list(extra_args)
        self._process: subprocess.Popen[bytes] | None = None
        if port is not None:
            self.port = port
            self.start()
            return
        # A port found free can still be taken before the server binds it: draw another.
        for attempt in range(_START_ATTEMPTS):
            self.port = free_port(cluster_bus=cluster_bus)
            try:
                self.start()
                return
            except RuntimeError:
                if attempt == _START_ATTEMPTS - 1:
                    raise

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert REDIS_SERVER is not None
        self._process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
                "--logfile",
                str(self.dir / "redis.log"),
                *self._extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_for_ping(self.port, self._process)
        except RuntimeError:
            self.stop()
            raise

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
            self._process = None

    def pause(self) -> None:
        """SIGSTOP: alive but silent (a replica that stops acknowledging)."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after ``pause``."""
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL: no chance to save or hand over anything, as when a node dies."""
        if self._process is not None:
            self._process.kill()
            self._process.wait(timeout=10)
            self._process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        """Whether the server's process is up (not killed or stopped)."""
        return self._process is not None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisClusterServers:
    """Three cluster-enabled redis-servers joined into one cluster (3 masters), each with
    ``replicas`` replicas. A replicated cluster is set up as docs/deploying.md recommends: a
    node timeout of 2 s (shorter ones fail over spuriously on a loaded 2-core machine) and
    ``cluster-require-full-coverage no``, so a master's failure refuses only its own slots."""

    def __init__(self, replicas: int = 0) -> None:
        if REDIS_CLI is None:
            raise RuntimeError(MISSING)
        self.replicas = replicas
        self.nodes: list[RedisServer] = []
        try:
            self._create()
        except BaseException:
            self.close()
            raise

    def _create(self) -> None:
        assert REDIS_CLI is not None
        timeout = (
            ["--cluster-node-timeout", "2000", "--cluster-require-full-coverage", "no"]
            if self.replicas
            else []
        )
        for _ in range(3 * (1 + self.replicas)):
            self.nodes.append(
                RedisServer(
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    *timeout,
                    cluster_bus=True,
                )
            )
        subprocess.run(
            [
                REDIS_CLI,
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in self.nodes),
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        self.wait_until_ok()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def ask(self, node: RedisServer, *command: str) -> str:
        """A redis-cli command's output on ``node`` ("" when it does not answer)."""
        assert REDIS_CLI is not None
        return subprocess.run(
            [REDIS_CLI, "-p", str(node.port), *command],
            capture_output=True,
            text=True,
            check=False,
            timeout=5,
        ).stdout

    def roles(self, seen_by: RedisServer | None = None) -> dict[int, str]:
        """Each node's role by port ("master", "slave"; "fail" for one seen failed), as
        ``seen_by`` (the first live node) sees the cluster now."""
        observer = seen_by or next(n for n in self.nodes if n.running)
        roles = {}
        for line in self.ask(observer, "cluster", "nodes").splitlines():
            fields = line.split()
            port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
            flags = fields[2].split(",")
            roles[port] = "fail" if "fail" in flags else "master" if "master" in flags else "slave"
        return roles

    def replica_of(self, master: RedisServer) -> RedisServer:
        """The node replicating ``master`` now."""
        lines = [line.split() for line in self.ask(master, "cluster", "nodes").splitlines()]
        [master_id] = [f[0] for f in lines if "myself" in f[2]]
        [port] = [int(f[1].split("@")[0].rsplit(":", 1)[1]) for f in lines if f[3] == master_id]
        return next(n for n in self.nodes if n.port == port)

    def masters(self) -> list[RedisServer]:
        """The nodes that are masters now."""
        roles = self.roles()
        return [n for n in self.nodes if roles.get(n.port) == "master"]

    def wait_until_ok(self, deadline_s: float = 20.0) -> None:
        """Until every live node sees the cluster up, three masters, and every replica synced."""
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            live = [n for n in self.nodes if n.running]
            states = [self.ask(n, "cluster", "info") for n in live]
            masters = [list(self.roles(n).values()).count("master") for n in live]
            synced = all(
                "master_link_status:up" in self.ask(n, "info", "replication")
                for n in live
                if "role:slave" in self.ask(n, "info", "replication")
            )
            if all("cluster_state:ok" in s for s in states) and set(masters) == {3} and synced:
                return
            time.sleep(0.1)
        raise RuntimeError("the Redis cluster did not become ready")

    def close(self) -> None:
        for node in self.nodes:
            node.close()


SENTINEL_MASTER = "otp-master"


class RedisSentinelGroup:
    """A real Sentinel group: one primary, one replica, three sentinels, all on loopback.

    The sentinels fail over after 1 s of silence from the primary (quorum 2).
    """

    def __init__(self) -> None:
        if REDIS_SERVER is None:
            raise RuntimeError(MISSING)
        # A full sync starts at once, not after Redis's default 5 s wait for more replicas: each
        # failover test syncs a restarted server.
        sync_now = ("--repl-diskless-sync-delay", "0")
        self.primary = RedisServer(*sync_now)
        self.replica = RedisServer(*sync_now, "--replicaof", "127.0.0.1", str(self.primary.port))
        self.sentinels: list[subprocess.Popen[bytes]] = []
        self.sentinel_ports: list[int] = []
        self.dir = Path(tempfile.mkdtemp(prefix="otp-sentinel-"))
        try:
            self.wait_replica_online()
            for index in range(3):
                self._start_sentinel(index)
            self.wait_until_watched()
        except BaseException:
            self.close()
            raise

    def wait_replica_online(self, master_port: int | None = None, deadline_s: float = 20.0) -> None:
        """Until the master sees a replica synced (a WAIT before that acknowledges 0)."""
        port = self.primary.port if master_port is None else master_port
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            if "state=online" in self._ask(port, "info", "replication"):
                return
            time.sleep(0.05)
        logs = {
            server.port: (server.dir / "redis.log").read_text(errors="replace")[-1500:]
            for server in (self.primary, self.replica)
            if (server.dir / "redis.log").exists()
        }
        raise RuntimeError(
            f"the replica did not sync with the primary on {port} in {deadline_s} s:\n"
            f"{self._ask(port, 'info', 'replication')}\nlogs: {logs}"
        )

    def _start_sentinel(self, index: int) -> None:
        assert REDIS_SERVER is not None
        port = free_port()
        config = self.dir / f"sentinel-{index}.conf"
        config.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {self.dir}\n"
            f"logfile {self.dir / f'sentinel-{index}.log'}\n"
            f"sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {self.primary.port} 2\n"
            f"sentinel down-after-milliseconds {SENTINEL_MASTER} 1000\n"
            f"sentinel failover-timeout {SENTINEL_MASTER} 5000\n"
        )
        process = subprocess.Popen(
            [REDIS_SERVER, str(config), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.sentinels.append(process)
        self.sentinel_ports.append(port)
        _wait_for_ping(port, process)

    @property
    def nodes(self) -> list[str]:
        """The sentinels as redis.sentinel.nodes takes them."""
        return [f"127.0.0.1:{port}" for port in self.sentinel_ports]

    def _ask(self, port: int, *command: str) -> str:
        assert REDIS_CLI is not None
        return subprocess.run(
            [REDIS_CLI, "-p", str(port), *command],
            capture_output=True,
            text=True,
            check=False,
            timeout=5,
        ).stdout

    def master_port(self) -> int | None:
        """The primary's port as the first sentinel names it now."""
        answer = self._ask(
            self.sentinel_ports[0], "sentinel", "get-master-addr-by-name", SENTINEL_MASTER
        )
        lines = answer.split()
        return int(lines[1]) if len(lines) == 2 else None

    def wait_until_watched(self, deadline_s: float = 20.0) -> None:
        """Until every sentinel knows the replica and the two other sentinels."""
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            ready = True
            for port in self.sentinel_ports:
                info = self._ask(port, "sentinel", "master", SENTINEL_MASTER)
                fields = info.split()
                values = dict(zip(fields[::2], fields[1::2], strict=False))
                if values.get("num-slaves") != "1" or values.get("num-other-sentinels") != "2":
                    ready = False
            if ready:
                return
            time.sleep(0.2)
        raise RuntimeError("the sentinels did not come to watch the primary and its replica")

    def wait_for_new_master(self, old_port: int, deadline_s: float = 25.0) -> int:
        """Until the sentinels name a master other than ``old_port`` that takes writes."""
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            port = self.master_port()
            if (
                port is not None
                and port != old_port
                and "role:master" in self._ask(port, "info", "replication")
            ):
                return port
            time.sleep(0.1)
        raise RuntimeError("the sentinels did not promote the replica")

    def close(self) -> None:
        for process in self.sentinels:
            process.terminate()
        for process in self.sentinels:
            process.wait(timeout=10)
        self.replica.close()
        self.primary.close()
        shutil.rmtree(self.dir, ignore_errors=True)
