"""The command line, as a user runs it: real processes, real sockets, real signals."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import redis

from tests.support.app import OUTBOX_KEY, PEPPER
from tests.support.processes import TOKEN, ServiceProcess, write_config
from tests.support.servers.providers import GATEWAY_SECRET, FakeGateway, Planned
from tests.support.servers.redis import RedisServer, free_port

# Starts, kills or times real processes: run in one xdist worker, apart from the rest.
pytestmark = pytest.mark.xdist_group("processes")


def test_dev_mode_walkthrough(dev_service: ServiceProcess) -> None:
    banner = dev_service.stdout.get(timeout=5)
    while "DEVELOPMENT MODE" not in banner:
        banner = dev_service.stdout.get(timeout=5)
    created = httpx.post(f"{dev_service.url}/challenge", json={"phone": "+14155550123"})
    assert created.status_code == 201, created.text
    challenge_id = created.json()["challenge_id"]
    code = dev_service.next_code(challenge_id)
    verified = httpx.post(
        f"{dev_service.url}/verify", json={"challenge_id": challenge_id, "code": code}
    )
    assert verified.status_code == 200, verified.text
    assert httpx.get(f"{dev_service.url}/readyz").status_code == 200
    # SIGTERM reaches the process and it shuts down gracefully.
    dev_service.stop()
    assert "Finished server process" in "".join(dev_service.stderr_lines)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        # No config and no --dev: production refuses, and says how to try it out.
        ([], "--dev"),
        (["--dev", "--workers", "2"], "workers"),
        (["--dev", "--host", "0.0.0.0"], "loopback"),
    ],
)
def test_serve_refuses_unsafe_or_incomplete_set_ups(args: list[str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "otpservice", "serve", *args],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("OTP_")},
        timeout=30,
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_production_mode_on_real_redis_with_tokens_logs_no_secrets(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    token = TOKEN
    service = ServiceProcess("--config", str(write_config(tmp_path, redis_server)))
    try:
        auth = {"Authorization": f"Bearer {token}"}
        assert (
            httpx.post(f"{service.url}/challenge", json={"phone": "+14155550199"}).status_code
            == 401
        )
        created = httpx.post(
            f"{service.url}/challenge", json={"phone": "+14155550199"}, headers=auth
        )
        assert created.status_code == 201, created.text
        challenge_id = created.json()["challenge_id"]
        code = service.next_code(challenge_id)
        wrong = f"{(int(code) + 1) % 10**6:06d}"
        body = {"challenge_id": challenge_id, "code": wrong}
        assert httpx.post(f"{service.url}/verify", json=body, headers=auth).status_code == 400
        body["code"] = code
        assert httpx.post(f"{service.url}/verify", json=body, headers=auth).status_code == 200
    finally:
        service.stop()
    logs = "".join(service.stderr_lines)
    assert "challenge issued" in logs
    assert f"challenge {challenge_id} failed: incorrect_code" in logs
    assert f"challenge approved: {challenge_id}" in logs
    assert code not in logs
    assert "4155550199" not in logs
    assert PEPPER not in logs
    assert OUTBOX_KEY not in logs
    assert token not in logs


def test_several_workers_share_the_state_in_redis_and_metrics_add_up(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    service = ServiceProcess(
        "--config",
        str(write_config(tmp_path, redis_server)),
        "--workers",
        "2",
        env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)},
    )
    try:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=service.url, headers=auth) as client:
            for n in range(12):
                created = client.post("/challenge", json={"phone": f"+1415555{3000 + n}"})
                assert created.status_code == 201, created.text
                challenge_id = created.json()["challenge_id"]
                code = service.next_code(challenge_id)
                body = {"challenge_id": challenge_id, "code": code}
                # New connections land on either worker; the answer is the same.
                assert (
                    httpx.post(f"{service.url}/verify", json=body, headers=auth).status_code == 200
                )
                assert (
                    httpx.post(f"{service.url}/verify", json=body, headers=auth).status_code == 410
                )
        # Both processes counted (one file each), and /metrics, from either, sums them.
        assert len({path.name.rsplit("_", 1)[-1] for path in metrics_dir.glob("counter_*.db")}) == 2
        for _ in range(4):
            exposed = httpx.get(f"{service.url}/metrics", headers=auth).text
            assert 'otp_challenges_total{outcome="issued"} 12.0' in exposed
            assert 'otp_verifications_total{outcome="approved"} 12.0' in exposed
    finally:
        service.stop()


def test_a_separate_worker_process_delivers_what_the_api_queued(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    config = str(write_config(tmp_path, redis_server, "[outbox]\nworkers_in_process = false\n"))
    service = ServiceProcess("--config", config)
    worker: ServiceProcess | None = None
    try:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        created = httpx.post(
            f"{service.url}/challenge", json={"phone": "+14155550177"}, headers=auth
        )
        assert created.status_code == 201, created.text
        challenge_id = created.json()["challenge_id"]
        time.sleep(0.5)
        assert service.stdout.empty()  # the API only queued it
        worker = ServiceProcess("--config", config, command="worker")
        code = worker.next_code(challenge_id)
        body = {"challenge_id": challenge_id, "code": code}
        assert httpx.post(f"{service.url}/verify", json=body, headers=auth).status_code == 200
        state = httpx.get(f"{service.url}/challenge/{challenge_id}", headers=auth).json()
        assert state["delivery"]["status"] == "sent"
    finally:
        service.stop()
        if worker is not None:
            worker.stop()  # SIGTERM: a clean exit
    assert "delivery worker stopped" in "".join(worker.stderr_lines)


def test_killing_a_worker_mid_send_loses_nothing_and_sends_nothing_twice(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    gateway = FakeGateway()
    gateway.plan = [Planned("late", delay=3.0)] * 3  # three sends still waiting at the kill
    providers = f"""
[outbox]
workers_in_process = false
claim_idle_seconds = 1
[[sms.providers]]
type = "generic"
url = "{gateway.url}/send"
secret = "{GATEWAY_SECRET}"
deduplicates = true
timeout_seconds = 10
"""
    config = str(write_config(tmp_path, redis_server, providers))
    service = ServiceProcess("--config", config)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    workers: list[ServiceProcess] = []
    try:
        ids = []
        for n in range(5):
            created = httpx.post(
                f"{service.url}/challenge", json={"phone": f"+1415555{6100 + n}"}, headers=auth
            )
            assert created.status_code == 201, created.text
            ids.append(created.json()["challenge_id"])
        workers.append(ServiceProcess("--config", config, command="worker"))
        deadline = time.monotonic() + 10
        while len(gateway.received) < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        workers[0].kill()  # three sends in the air
        workers.append(ServiceProcess("--config", config, command="worker"))
        states: dict[str, str] = {}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            states = {
                cid: httpx.get(f"{service.url}/challenge/{cid}", headers=auth).json()["delivery"][
                    "status"
                ]
                for cid in ids
            }
            if set(states.values()) == {"sent"}:
                break
            time.sleep(0.1)
        assert set(states.values()) == {"sent"}, states
        # Every code reached its phone once: the repeats after the takeover were dropped.
        assert sorted(m.fields["challenge_id"] for m in gateway.delivered) == sorted(ids)
        # 5 first sends, then a repeat for each the killed worker had not recorded as done:
        # the 3 slow ones, and the quick ones if the kill came before their answers.
        assert 8 <= len(gateway.received) <= 10
    finally:
        service.stop()
        workers[-1].stop()
        gateway.close()


def otpservice_command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "otpservice", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_opt_outs_move_between_files_and_redis(tmp_path: Path, redis_server: RedisServer) -> None:
    config = write_config(tmp_path, redis_server)
    config.write_text(config.read_text().replace('"cli-test"', '"cli-opt-outs"'))
    (tmp_path / "from-provider.csv").write_text(
        "phone,opted_out_at,source,detail,date_created\n"
        "+14155550101,2024-03-01T10:00:00Z,twilio,STOP,2024-03-01\n"
        "not-a-number,,,,\n"
        "+447911123456,,,,\n"
        "+447911123457,2024-03-01T10:00:00,,,\n"
    )
    (tmp_path / "backup.jsonl").write_text(
        '{"phone": "+14155550101"}\n{"phone": "+33612345678", "source": "admin"}\n{oops\n'
    )
    imported = otpservice_command(
        "opt-outs", "import", str(tmp_path / "from-provider.csv"), "--config", str(config)
    )
    assert imported.returncode == 1  # a row was skipped, and said so
    assert "line 3:" in imported.stderr
    assert "line 5:" in imported.stderr  # a time without its zone
    assert "imported 2 opt-outs" in imported.stderr
    imported = otpservice_command(
        "opt-outs", "import", str(tmp_path / "backup.jsonl"), "--config", str(config)
    )
    assert "imported 1 opt-outs (1 were opted out already, 1 rows skipped)" in imported.stderr
    assert "line 3: not JSON" in imported.stderr

    exported = otpservice_command("opt-outs", "export", "-", "--config", str(config))
    assert exported.returncode == 0, exported.stderr
    # In the index's order, which tells nothing about the numbers (keyed digests).
    rows = [json.loads(line) for line in exported.stdout.splitlines()]
    rows.sort(key=lambda r: str(r["phone"]))
    assert [(r["phone"], r["source"]) for r in rows] == [
        ("+14155550101", "twilio"),
        ("+33612345678", "admin"),
        ("+447911123456", "import"),
    ]
    assert rows[0]["opted_out_at"] == "2024-03-01T10:00:00Z"  # the original time is kept
    as_csv = otpservice_command(
        "opt-outs", "export", str(tmp_path / "out.csv"), "--config", str(config)
    )
    assert as_csv.returncode == 0, as_csv.stderr
    lines = (tmp_path / "out.csv").read_text().splitlines()
    assert lines[0] == "phone,opted_out_at,source,sender,detail"
    assert "+14155550101,2024-03-01T10:00:00+00:00,twilio,,STOP" in lines[1:]
    # An import does not announce each number to the app.
    with redis.Redis.from_url(redis_server.url) as client:
        assert client.exists("cli-opt-outs:{events}:feed") == 0


def test_sighup_rereads_the_config(tmp_path: Path, redis_server: RedisServer) -> None:
    service = ServiceProcess("--config", str(write_config(tmp_path, redis_server)))
    try:
        service.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if any("config reloaded" in line for line in service.stderr_lines):
                break
            time.sleep(0.05)
        assert any("config reloaded" in line for line in service.stderr_lines)
        assert service.process.poll() is None  # SIGHUP did not end it
    finally:
        service.stop()


def test_metrics_add_up_across_worker_processes(tmp_path: Path, redis_server: RedisServer) -> None:
    samples_dir = tmp_path / "prometheus"
    samples_dir.mkdir()
    service = ServiceProcess(
        "--config",
        str(write_config(tmp_path, redis_server)),
        "--workers",
        "2",
        env={"PROMETHEUS_MULTIPROC_DIR": str(samples_dir)},
    )
    try:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        for n in range(6):
            response = httpx.post(
                f"{service.url}/challenge", json={"phone": f"+1415555{n:04d}"}, headers=auth
            )
            assert response.status_code == 201, response.text
        pattern = re.compile(
            r'^otp_http_requests_total\{method="POST",route="/challenge",status="201"\} (\S+)$',
            re.MULTILINE,
        )
        # Whichever process answers, it reports all six.
        for _ in range(4):
            text = httpx.get(f"{service.url}/metrics").text
            match = pattern.search(text)
            assert match, text[:2000]
            assert float(match.group(1)) == 6
    finally:
        service.stop()


def test_the_pod_listener_serves_only_probes_metrics_and_webhooks(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    pod_port = free_port()
    config = write_config(
        tmp_path, redis_server, f'[pod_listener]\nhost = "127.0.0.1"\nport = {pod_port}\n'
    )
    service = ServiceProcess("--config", str(config))
    pod = f"http://127.0.0.1:{pod_port}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        for path in ("/healthz", "/readyz", "/metrics"):
            assert httpx.get(f"{pod}{path}").status_code == 200, path
        # The webhooks answer there with their own checks (Twilio's signature is missing).
        assert httpx.post(f"{pod}/webhooks/twilio/inbound", content=b"").status_code == 403
        # The API does not, even with a good token.
        refused = httpx.post(f"{pod}/challenge", json={"phone": "+14155550166"}, headers=auth)
        assert refused.status_code == 404
        assert refused.json()["code"] == "not_found"
        assert httpx.get(f"{pod}/opt-outs", headers=auth).status_code == 404
        # Nor the API docs: their page, assets and spec are on the API's address only.
        for path in ("/openapi/swagger", "/openapi/assets/docs.js", "/openapi/openapi.json"):
            assert httpx.get(f"{pod}{path}", headers=auth).status_code == 404, path
        # On the API's own address all is as before.
        created = httpx.post(
            f"{service.url}/challenge", json={"phone": "+14155550166"}, headers=auth
        )
        assert created.status_code == 201
    finally:
        service.stop()


def test_sigterm_lets_requests_and_sends_in_flight_finish(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    gateway = FakeGateway()
    gateway.plan = [Planned("late", delay=2.0)]
    providers = f"""
[[sms.providers]]
type = "generic"
url = "{gateway.url}/send"
secret = "{GATEWAY_SECRET}"
timeout_seconds = 10
"""
    # A slow hash (256 MiB, t=4): a /verify stays in flight for a while.
    slow = {"OTP_HASHING__MEMORY_KIB": "262144", "OTP_HASHING__TIME_COST": "4"}
    config = str(write_config(tmp_path, redis_server, providers))
    service = ServiceProcess("--config", config, env=slow)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        created = httpx.post(
            f"{service.url}/challenge", json={"phone": "+14155550155"}, headers=auth, timeout=30
        )
        assert created.status_code == 201
        challenge_id = created.json()["challenge_id"]
        deadline = time.monotonic() + 5
        while not gateway.received and time.monotonic() < deadline:
            time.sleep(0.02)
        assert gateway.received  # the send is in the air for two seconds
        answers: list[int] = []
        verifying = threading.Thread(
            target=lambda: answers.append(
                httpx.post(
                    f"{service.url}/verify",
                    json={"challenge_id": challenge_id, "code": "000000"},
                    headers=auth,
                    timeout=30,
                ).status_code
            )
        )
        verifying.start()
        # The hash takes over a second: by then the request is surely accepted and hashing.
        time.sleep(0.4)
        started = time.monotonic()
        service.process.send_signal(signal.SIGTERM)
        verifying.join(timeout=30)
        assert service.process.wait(timeout=15) in (0, -signal.SIGTERM)
        # The request in flight got its answer (a wrong code), not a reset connection.
        assert answers == [400]
        # It waited for the send instead of dropping it, and stopped soon after.
        assert 1.0 <= time.monotonic() - started < 10
        service._close_streams()
    finally:
        if service.process.poll() is None:
            service.stop()
        gateway.close()
    logs = "".join(service.stderr_lines)
    assert f"SMS for challenge {challenge_id} sent via generic" in logs
    # A new process sees the send recorded: nothing is left to send twice.
    again = ServiceProcess("--config", config)
    try:
        state = httpx.get(f"{again.url}/challenge/{challenge_id}", headers=auth).json()
        assert state["delivery"]["status"] == "sent"
        time.sleep(0.5)
        assert len(gateway.received) == 1
    finally:
        again.stop()
