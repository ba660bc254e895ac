"""The README's first command works with a distribution's own python3: no pip, no uv, fresh HOME."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.support.processes import ServiceProcess, copy_checkout
from tests.support.servers.redis import free_port

ROOT = Path(__file__).resolve().parents[2]
DISTRIBUTION_PYTHON = Path("/usr/bin/python3")
# Network settings a user's machine would have; nothing about Python or uv passes through.
NETWORK_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "https_proxy", "http_proxy")

# Its own worker: a fresh uv cache downloads the service's dependencies once per run.
pytestmark = pytest.mark.xdist_group("bootstrap")


def readme_commands() -> list[str]:
    """The README's first two lines (a blank line between them), each an inline code span."""
    lines = [line for line in (ROOT / "README.md").read_text().splitlines()[:3] if line]
    assert all(line.startswith("`") and line.endswith("`") for line in lines), lines
    return [line.strip("`") for line in lines]


def test_the_readme_names_the_bootstrap_commands() -> None:
    run, check = readme_commands()
    assert run == "python3 scripts/bootstrap.py serve --dev"
    assert check == "python3 scripts/bootstrap.py check"
    assert "python3 scripts/bootstrap.py check" in (ROOT / ".ci" / "run").read_text()


def test_the_first_command_installs_the_service_alone_and_serves(tmp_path: Path) -> None:
    if not DISTRIBUTION_PYTHON.exists():
        pytest.fail("/usr/bin/python3 is missing: `sudo apt-get install python3` (.ci/run does)")
    repo, home = tmp_path / "repo", tmp_path / "home"
    home.mkdir()
    # What a clone of this checkout would hold, the change being tested included.
    copy_checkout(repo, untracked=True)
    network = {name: os.environ[name] for name in NETWORK_VARIABLES if name in os.environ}
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", **network}
    # Isolated and without site, the interpreter sees no pip, nor anything installed.
    isolated = [str(DISTRIBUTION_PYTHON), "-I", "-S"]
    program, *args = shlex.split(readme_commands()[0])
    assert program == "python3"
    port = free_port()
    process = subprocess.Popen(
        [*isolated, *args, "--port", str(port)],
        cwd=repo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        ServiceProcess.wait_for(f"http://127.0.0.1:{port}", process, timeout_s=240)
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
    except RuntimeError as exc:
        process.kill()
        output = process.communicate()[0]
        pytest.fail(f"{exc}; it printed:\n{output[-4000:]}")
    finally:
        process.terminate()
        process.communicate(timeout=20)
    venv = repo / ".venv" / "bin"
    assert (venv / "otpservice").exists()
    # The run command installs what the service needs, not the dev tools.
    assert not (venv / "ruff").exists()
    assert not (venv / "pytest").exists()
