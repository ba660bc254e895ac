"""The layout's rules hold: the import layers of docs/architecture.md (import-linter), and the
use cases load without the web framework, an HTTP client or any SMS provider."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
PROVIDER_MODULES = {
    "otpservice.sms.acs",
    "otpservice.sms.twilio",
    "otpservice.sms.generic",
    "otpservice.sms.console",
    "otpservice.sms.http",
    "otpservice.sms.chain",
    "otpservice.sms.factory",
}


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_package_keeps_its_import_layers() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_an_upward_import_breaks_the_check(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "otpservice", tmp_path / "otpservice")
    shutil.copy2(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    keys = tmp_path / "otpservice" / "store" / "keys.py"
    # A type-only import counts too: it is still a dependency a reader must follow.
    keys.write_text(
        keys.read_text()
        + "\nfrom typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n"
        + "    from otpservice.usecases.otp import OtpService  # noqa: F401\n"
    )
    result = lint_imports(tmp_path)
    assert result.returncode != 0, result.stdout
    assert "otpservice.store is not allowed to import otpservice.usecases" in result.stdout


def test_the_otp_use_case_loads_no_web_framework_http_client_or_provider() -> None:
    script = "import json, sys, otpservice.usecases.otp; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    loaded = set(json.loads(result.stdout))
    assert "otpservice.usecases.otp" in loaded
    assert not {name for name in loaded if name.split(".")[0] in ("httpx", "litestar")}
    assert not loaded & PROVIDER_MODULES
