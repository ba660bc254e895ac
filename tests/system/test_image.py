"""The container image's recipe, run for real: there is no container engine here, so the
Dockerfile's install script runs into a fresh directory as a non-root user, from a read-only
copy of the code, and the service starts from what it installed."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.processes import ServiceProcess, copy_checkout, uv_binary
from tests.support.servers.redis import free_port

# Starts, kills or times real processes: run in one xdist worker, apart from the rest.
pytestmark = pytest.mark.xdist_group("processes")

ROOT = Path(__file__).parents[2]
NOBODY = 65534


def as_non_root() -> dict[str, object]:
    """subprocess options that drop to an unprivileged user when the tests run as root."""
    return {"user": NOBODY, "group": NOBODY, "extra_groups": []} if os.geteuid() == 0 else {}


def read_only_copy(destination: Path) -> None:
    """The files git tracks, as a build context would have them, made read-only."""
    copy_checkout(destination)
    for path in [destination, *destination.rglob("*")]:
        mode = path.stat().st_mode
        path.chmod(
            mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
            | stat.S_IROTH
            | (stat.S_IXOTH if path.is_dir() or mode & stat.S_IXUSR else 0)
        )


def run_install(
    folder: Path, script: str, name: str
) -> tuple[Path, Path, dict[str, str], subprocess.CompletedProcess[str]]:
    """An image's install ``script`` run as a non-root user from a read-only copy of the
    code into ``folder``/home/``name``, with only the pinned uv on PATH: the copy, the
    target, the environment it ran with, and how it went."""
    source, bin_dir, home = folder / "src", folder / "bin", folder / "home"
    read_only_copy(source)
    bin_dir.mkdir()
    shutil.copy2(uv_binary(), bin_dir / "uv")
    bin_dir.chmod(0o755)
    home.mkdir()
    if os.geteuid() == 0:
        os.chown(home, NOBODY, NOBODY)
    env = {
        **os.environ,
        "HOME": str(home),
        "UV_CACHE_DIR": str(home / "uv-cache"),
        "PATH": f"{bin_dir}:/usr/bin:/bin",
    }
    env.pop("VIRTUAL_ENV", None)
    target = home / name
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    installed = subprocess.run(
        ["sh", str(source / script), str(source), str(target), python],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=home,  # uv reads its config from where it runs: not from the checkout
        **as_non_root(),
    )
    return source, target, env, installed


@pytest.fixture
def open_tmp_path() -> Iterator[Path]:
    """A temporary directory another user can reach (pytest's own is private to its user)."""
    path = Path(tempfile.mkdtemp(prefix="otpservice-image-"))
    path.chmod(0o755)
    yield path
    for child in [path, *path.rglob("*")]:
        if not child.is_symlink():
            child.chmod(child.stat().st_mode | stat.S_IWUSR)
    shutil.rmtree(path)


def hadolint_clean(dockerfile: Path) -> str:
    """The Dockerfile's text, once hadolint found nothing in it."""
    result = subprocess.run(
        [Path(sys.executable).parent / "hadolint", str(dockerfile)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return dockerfile.read_text()


def test_dockerfile_is_hadolint_clean_and_runs_the_install_script() -> None:
    text = hadolint_clean(ROOT / "Dockerfile")
    assert "RUN install-service /src /opt/otpservice" in text
    assert "USER 10001:10001" in text
    assert 'ENTRYPOINT ["/opt/otpservice/bin/otpservice", "serve"]' in text


@pytest.mark.skipif(not shutil.which("git"), reason="needs git to list the tracked files")
def test_the_install_script_builds_a_working_service_as_non_root(
    open_tmp_path: Path,
) -> None:
    source, target, env, installed = run_install(
        open_tmp_path, "docker/install-service", "otpservice"
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert "installed otpservice" in installed.stdout
    # Nothing was written into the source (it is read-only), no editable link to it.
    assert not (source / ".venv").exists()
    assert not any(target.rglob("*.pth")) or all(
        str(source) not in p.read_text() for p in target.rglob("*.pth")
    )

    port = free_port()
    service = subprocess.Popen(
        [str(target / "bin" / "otpservice"), "serve", "--dev", "--port", str(port)],
        env=env,
        cwd="/",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **as_non_root(),  # type: ignore[call-overload]
    )
    try:
        url = f"http://127.0.0.1:{port}"
        ServiceProcess.wait_for(url, service)
        created = httpx.post(f"{url}/challenge", json={"phone": "+14155550123"})
        assert created.status_code == 201, created.text
    finally:
        service.send_signal(signal.SIGTERM)
        returncode = service.wait(timeout=20)
        out, err = service.communicate()
        assert returncode in (0, -signal.SIGTERM), err[-3000:]
    assert "DEVELOPMENT MODE" in out
    assert "Traceback" not in err


def test_the_login_examples_dockerfile_is_hadolint_clean_and_runs_its_install_script() -> None:
    text = hadolint_clean(ROOT / "examples" / "login-app" / "Dockerfile")
    assert "RUN sh examples/login-app/install /src /opt/login-app" in text
    assert "USER 10001:10001" in text


@pytest.mark.skipif(not shutil.which("git"), reason="needs git to list the tracked files")
def test_the_login_example_installs_and_serves_as_non_root(open_tmp_path: Path) -> None:
    _, target, env, installed = run_install(
        open_tmp_path, "examples/login-app/install", "login-app"
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert "installed the login example" in installed.stdout
    # Only the client and the example's pins: not the service, nor its Redis client.
    listed = subprocess.run(
        [str(target / "bin" / "python"), "-c", "import otpservice"],
        capture_output=True,
        text=True,
        check=False,
        cwd=target,
    )
    assert listed.returncode != 0
    port = free_port()
    app = subprocess.Popen(
        [
            *(str(target / "bin" / "python"), "-m", "uvicorn", "--factory"),
            *("login_app:create_app", "--app-dir", str(target / "app"), "--port", str(port)),
        ],
        env={**env, "LOGIN_USERS": str(target / "app" / "users.example.json")},
        cwd="/",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **as_non_root(),  # type: ignore[call-overload]
    )
    try:
        ServiceProcess.wait_for(f"http://127.0.0.1:{port}", app)
        page = httpx.get(f"http://127.0.0.1:{port}/login")
        assert page.status_code == 200
        assert 'name="csrf"' in page.text
    finally:
        app.send_signal(signal.SIGTERM)
        app.wait(timeout=20)
        app.communicate()
