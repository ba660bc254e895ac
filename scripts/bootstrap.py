"""Set-up with nothing but a distribution's Python 3.11+: no pip, no venv module, no network tools.

    python3 scripts/bootstrap.py serve --dev     # install what the service needs, then run it
    python3 scripts/bootstrap.py check           # install the dev tools too, then the test command
    python3 scripts/bootstrap.py login-example   # the example login app (examples/login-app)

Fetches the pinned uv wheel from PyPI, checks its SHA-256, unpacks the ``uv`` binary into
``.tools/`` of this checkout, and hands over to it: ``uv run --locked --no-dev otpservice ARGS``
for anything but ``check``, ``scripts/check`` (with ``UV`` naming that binary) for ``check``.
uv then builds ``.venv`` from ``uv.lock``; nothing is installed outside the checkout but uv's
download cache. Only the standard library is used, so ``python3 -I -S`` runs it too.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import stat
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path
from typing import NoReturn

UV_VERSION = "0.13.9"
_WHEELS = "https://files.pythonhosted.org/packages"
# (sys.platform, machine) -> (path under files.pythonhosted.org, SHA-256), from PyPI's index.
UV_WHEELS: dict[tuple[str, str], tuple[str, str]] = {
    ("linux", "x86_64"): (
        "3d/aa/26d64642d808de4a652579ef950d7cd2d37f080a8babf9c67c6b75fc4c3f/"
        "uv-0.13.9-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "d7f459fe4fd247d830351c75686d3996ace3c6f3f728eb0e85a30b7ada0cef19",
    ),
    ("linux", "aarch64"): (
        "57/15/94b6cd62ac3ff6550288328e8035288875197cbc183f51554b266a69877b/"
        "uv-0.13.9-py3-none-manylinux_2_17_aarch64.manylinux2014_aarch64.musllinux_1_1_aarch64.whl",
        "5435c5ce14a56431208ca0996416d310f1598e8c2c8ba707688985a16bb82dbe",
    ),
    ("darwin", "arm64"): (
        "f3/a7/a8d7b074798c7fb3b26b37584b8fe2e29df2ccdc24ce7902caab2a53edbf/"
        "uv-0.13.9-py3-none-macosx_11_0_arm64.whl",
        "66c512266d633bef48384a1f53003f41f2a8e7b36fe6e7fbfd3e0fd52d96fa63",
    ),
    ("darwin", "x86_64"): (
        "1e/db/08e9ef4879bd667e6d7b4705e594e5bd3e4585f10fc63cb16b9fa2fac63e/"
        "uv-0.13.9-py3-none-macosx_10_12_x86_64.whl",
        "c16ed11e013557536b3e60065f1b912f6407bd6518e041b961e23ef9e6b4fbf5",
    ),
}
ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / ".tools" / f"uv-{UV_VERSION}"
USAGE = (
    "usage: python3 scripts/bootstrap.py check [PYTEST-ARGS] | login-example [UVICORN-ARGS]"
    " | OTPSERVICE-ARGS (e.g. serve --dev)"
)


def _fail(message: str) -> NoReturn:
    print(f"bootstrap: {message}", file=sys.stderr)
    raise SystemExit(1)


def _wheel() -> tuple[str, str]:
    machine = platform.machine().lower().replace("amd64", "x86_64").replace("arm64", "aarch64")
    if sys.platform == "darwin":
        machine = machine.replace("aarch64", "arm64")
    wheel = UV_WHEELS.get((sys.platform, machine))
    if wheel is None:
        _fail(
            f"no pinned uv wheel for {sys.platform}/{machine}; install uv {UV_VERSION} "
            "(https://docs.astral.sh/uv/) and run `uv run --locked --no-dev otpservice serve --dev`"
        )
    return wheel


def _download(path: str, sha256: str) -> bytes:
    url = f"{_WHEELS}/{path}"
    print(f"bootstrap: fetching uv {UV_VERSION} from {url}", file=sys.stderr)
    try:
        with urllib.request.urlopen(url, timeout=120) as response:  # noqa: S310 (a fixed https URL)
            body: bytes = response.read()
    except OSError as exc:
        _fail(f"could not download uv ({exc}); a proxy is taken from HTTPS_PROXY")
    digest = hashlib.sha256(body).hexdigest()
    if digest != sha256:
        _fail(f"the uv wheel's SHA-256 is {digest}, not the pinned {sha256}: refusing to use it")
    return body


def uv_binary() -> Path:
    """The pinned uv in .tools/, fetched and checked first if it is not there yet.

    A binary already there is trusted as it is: only this script writes it, after the check.
    """
    binary = TOOLS / "uv"
    if binary.exists():
        return binary
    path, sha256 = _wheel()
    body = _download(path, sha256)
    TOOLS.parent.mkdir(exist_ok=True)
    # Unpack next to the target and rename, so an interrupted run leaves no half binary.
    staging = Path(tempfile.mkdtemp(dir=TOOLS.parent))
    wheel_file = staging / "uv.whl"
    wheel_file.write_bytes(body)
    with zipfile.ZipFile(wheel_file) as wheel:
        member = next(n for n in wheel.namelist() if n.endswith(".data/scripts/uv"))
        (staging / "uv").write_bytes(wheel.read(member))
    wheel_file.unlink()
    (staging / "uv").chmod(stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    shutil.rmtree(TOOLS, ignore_errors=True)
    staging.rename(TOOLS)
    return binary


def main(argv: list[str]) -> None:
    """Fetch uv if needed, then replace this process with the service or the test command."""
    if not argv or argv[0] in {"-h", "--help"}:
        print(USAGE)
        raise SystemExit(0 if argv else 2)
    # A distribution may start this with an older python3: say so instead of failing later.
    if sys.version_info < (3, 11):  # noqa: UP036
        _fail(f"Python 3.11 or newer is needed, this is {platform.python_version()}")
    uv = str(uv_binary())
    os.chdir(ROOT)
    # Trust what this system trusts (as urllib did to fetch uv), a corporate proxy's root included.
    os.environ.setdefault("UV_SYSTEM_CERTS", "1")
    if argv[0] == "check":
        os.environ["UV"] = uv
        os.execv("/bin/sh", ["sh", str(ROOT / "scripts" / "check"), *argv[1:]])  # noqa: S606
    if argv[0] == "login-example":
        # The example's own dependencies: the service's (Litestar, uvicorn, argon2) and the client.
        example = ROOT / "examples" / "login-app"
        os.environ.setdefault("LOGIN_USERS", str(example / "users.example.json"))
        command = ["uvicorn", "--factory", "login_app:create_app", "--app-dir", str(example)]
        os.execv(uv, [uv, "run", "--locked", "--no-dev", "--with", "./client", *command, *argv[1:]])  # noqa: S606
    os.execv(uv, [uv, "run", "--locked", "--no-dev", "otpservice", *argv])  # noqa: S606


if __name__ == "__main__":
    main(sys.argv[1:])
