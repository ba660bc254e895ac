"""The client against the service as it runs (a process on a real Redis), and installed on
its own, without the service."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pyotp
import pytest
from otpservice_client import OtpClient
from otpservice_client.errors import (
    ChallengeUsed,
    CodeAlreadyUsed,
    FactorNotFound,
    IncorrectCode,
    InvalidPhone,
    Unauthorized,
)

from tests.support.processes import TOKEN, ServiceProcess, uv_binary, write_config
from tests.support.servers.redis import RedisServer

# Starts the service as a process: run in one xdist worker, apart from the rest.
pytestmark = pytest.mark.xdist_group("processes")
CLIENT = Path(__file__).resolve().parents[2] / "client"


@pytest.fixture
def service(tmp_path: Path, redis_server: RedisServer) -> Iterator[ServiceProcess]:
    running = ServiceProcess("--config", str(write_config(tmp_path, redis_server)))
    yield running
    running.stop()


def test_every_call_against_the_running_service(service: ServiceProcess) -> None:
    with OtpClient(service.url, TOKEN) as otp:
        with pytest.raises(InvalidPhone):
            otp.start_challenge("not a number")
        challenge = otp.start_challenge("+14155557701", client_ip="203.0.113.7")
        assert challenge.status == "pending"
    with OtpClient(service.url, TOKEN) as otp:
        code = service.next_code(challenge.challenge_id)
        with pytest.raises(IncorrectCode) as wrong:
            otp.verify(challenge.challenge_id, f"{(int(code) + 1) % 10**6:06d}")
        assert wrong.value.attempts_left == 4
        assert otp.verify(challenge.challenge_id, code).status == "approved"
        with pytest.raises(ChallengeUsed):
            otp.verify(challenge.challenge_id, code)
        state = otp.get_challenge(challenge.challenge_id)
        assert (state.status, state.phone) == ("approved", "+1********01")

        enrolment = otp.enrol_totp("user-9", "nine@example.com")
        app = pyotp.parse_uri(enrolment.otpauth_uri)
        assert isinstance(app, pyotp.TOTP)
        activation = otp.activate_totp(enrolment.factor_id, app.now())
        with pytest.raises(CodeAlreadyUsed):
            otp.verify_totp("user-9", app.now())
        approval = otp.verify_totp("user-9", app.at(time.time() + app.interval))
        assert approval.factor_id == enrolment.factor_id
        recovered = otp.use_recovery_code("user-9", activation.recovery_codes[0])
        assert recovered.recovery_codes_left == 9
        assert len(otp.regenerate_recovery_codes(enrolment.factor_id)) == 10
        (factor,) = otp.list_factors("user-9")
        assert (factor.status, factor.label) == ("active", "nine@example.com")
        assert otp.remove_factor(enrolment.factor_id).status == "removed"
        with pytest.raises(FactorNotFound):
            otp.verify_totp("user-9", app.now())
    with OtpClient(service.url, "not-the-token") as stranger, pytest.raises(Unauthorized):
        stranger.get_challenge(challenge.challenge_id)


def test_a_keyed_start_sent_again_is_the_same_challenge(service: ServiceProcess) -> None:
    with OtpClient(service.url, TOKEN) as otp:
        first = otp.start_challenge("+14155557702", idempotency_key="attempt-1")
        again = otp.start_challenge("+14155557702", idempotency_key="attempt-1")
        assert again.challenge_id == first.challenge_id
        assert again.replayed
        cancelled = otp.cancel_challenge(first.challenge_id)
        assert cancelled.status == "cancelled"


def test_the_client_installs_and_imports_without_the_service(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    uv = uv_binary()
    made = subprocess.run(
        [uv, "venv", "-q", str(venv)], capture_output=True, text=True, check=False
    )
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    installed = subprocess.run(
        [uv, "pip", "install", "-q", "--python", str(python), str(CLIENT)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stderr
    probe = (
        "import importlib.util, otpservice_client\n"
        "from otpservice_client import OtpClient, AsyncOtpClient\n"
        "missing = [m for m in ('otpservice', 'litestar', 'argon2', 'redis')"
        " if importlib.util.find_spec(m) is not None]\n"
        "print('present:', missing)\n"
    )
    # Run elsewhere than the checkout, whose otpservice/ would be importable from there.
    result = subprocess.run(
        [str(python), "-c", probe], capture_output=True, text=True, check=False, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "present: []"
