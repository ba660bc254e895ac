"""Reaching Redis as production does: with a password from a secret file, and over TLS."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from otpservice.app import create_app
from otpservice.config.schema import Settings
from otpservice.store import connect
from tests.support.app import INDEX_KEY, PEPPER, Phone, running
from tests.support.helpers import assert_problem, issue_code
from tests.support.servers.redis import RedisServer, free_port

PASSWORD = "redis-password-0123456789"


@asynccontextmanager
async def service(settings: Settings, phone: Phone) -> AsyncIterator[httpx.AsyncClient]:
    client = connect(settings)
    try:
        async with running(
            phone.watch(create_app(settings, redis=client, sms=phone.sender))
        ) as api:
            yield api
    finally:
        await client.aclose()


async def walk_through(api: httpx.AsyncClient, phone: Phone) -> None:
    challenge_id, code = await issue_code(api, phone)
    response = await api.post("/verify", json={"challenge_id": challenge_id, "code": code})
    assert response.status_code == 200, response.text


@pytest.fixture
def password_redis() -> Iterator[RedisServer]:
    server = RedisServer("--requirepass", PASSWORD)
    yield server
    server.close()


async def test_password_from_a_secret_file(
    password_redis: RedisServer,
    make_settings: Callable[..., Settings],
    phone: Phone,
    tmp_path: Path,
) -> None:
    (tmp_path / "redis-password").write_text(PASSWORD + "\n")
    secrets: dict[str, Any] = {"pepper": PEPPER, "index_key": INDEX_KEY}
    settings = make_settings(
        password_redis.url,
        secrets={**secrets, "redis_password_file": str(tmp_path / "redis-password")},
    )
    async with service(settings, phone) as api:
        await walk_through(api, phone)
    wrong = make_settings(password_redis.url, secrets={**secrets, "redis_password": "wrong"})
    async with service(wrong, phone) as api:
        assert_problem(await api.get("/readyz"), 503, "store_unavailable")
        response = await api.post("/challenge", json={"phone": "+14155550124"})
        assert_problem(response, 503, "store_unavailable")


def _make_certificates(directory: Path) -> dict[str, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1, made with openssl."""
    files = {name: directory / f"{name}.pem" for name in ("ca", "ca-key", "server", "server-key")}
    run = lambda *args: subprocess.run(["openssl", *args], check=True, capture_output=True)  # noqa: E731
    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        str(files["ca-key"]),
        "-out",
        str(files["ca"]),
    )
    csr = directory / "server.csr"
    run(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        str(files["server-key"]),
        "-out",
        str(csr),
    )
    ext = directory / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    run(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(files["ca"]),
        "-CAkey",
        str(files["ca-key"]),
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        str(ext),
        "-out",
        str(files["server"]),
    )
    return files


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[RedisServer, int, Path]]:
    files = _make_certificates(tmp_path)
    tls_port = free_port()
    server = RedisServer(
        "--tls-port",
        str(tls_port),
        "--tls-cert-file",
        str(files["server"]),
        "--tls-key-file",
        str(files["server-key"]),
        "--tls-ca-cert-file",
        str(files["ca"]),
        "--tls-auth-clients",
        "no",
    )
    yield server, tls_port, files["ca"]
    server.close()


async def test_tls_with_a_private_ca(
    tls_redis: tuple[RedisServer, int, Path],
    make_settings: Callable[..., Settings],
    phone: Phone,
) -> None:
    _, tls_port, ca = tls_redis
    url = f"rediss://127.0.0.1:{tls_port}/0"
    settings = make_settings(url, redis={"url": url, "tls_ca_file": str(ca)})
    async with service(settings, phone) as api:
        await walk_through(api, phone)
    # Without the CA, the server's certificate is not trusted: no store, no code sent.
    # (No delivery worker: redis-py leaves an unclosed connection behind each failed TLS
    # handshake, and a worker would retry every second.)
    untrusted = make_settings(url, redis={"url": url}, outbox={"workers_in_process": False})
    before = len(phone.messages())
    async with service(untrusted, phone) as api:
        response = await api.post("/challenge", json={"phone": "+14155550124"})
        assert_problem(response, 503, "store_unavailable")
    assert len(phone.messages()) == before
