"""schemathesis against a running service: the spec says what the server does, and no 5xx."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import ServiceProcess

TOKEN = "schemathesis-token-0123456789abcdef0123"
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
)
# Raised limits, so a valid request is refused only by a rule its operation documents.
CONFIG = f"""
[send_limits]
min_interval_seconds = 0
per_hour = 100000
per_day = 100000
[hashing]
memory_kib = 1024
time_cost = 1
[unsafe]
allow_weak_limits = true
[abuse.fraud_guard]
enabled = false
[[abuse.rules]]
name = "global"
scope = "global"
mode = "monitor"
windows = [{{ limit = 1000000, seconds = 60 }}]
[[api_tokens]]
client = "schemathesis"
token_sha256 = "{hashlib.sha256(TOKEN.encode()).hexdigest()}"
scopes = ["otp", "admin"]
"""

pytestmark = pytest.mark.xdist_group("schemathesis")


def test_the_server_keeps_to_its_spec(tmp_path: Path) -> None:
    config = tmp_path / "otp.toml"
    config.write_text(CONFIG)
    service = ServiceProcess("--dev", "--config", str(config))
    try:
        run = subprocess.run(
            [
                str(Path(sys.executable).parent / "schemathesis"),
                "run",
                f"{service.url}/openapi/openapi.json",
                "--header",
                f"Authorization: Bearer {TOKEN}",
                "--checks",
                ",".join(CHECKS),
                "--max-examples",
                "50",
                "--seed",
                "1",
            ],
            capture_output=True,
            text=True,
            timeout=180,
            cwd=tmp_path,  # its example database stays out of the checkout
            check=False,
        )
    finally:
        service.stop()
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
    assert " passed" in run.stdout
