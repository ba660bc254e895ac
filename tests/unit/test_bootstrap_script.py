"""scripts/bootstrap.py uses a uv wheel only when its SHA-256 is the pinned one."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bootstrap.py"


@pytest.fixture
def bootstrap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The script as a module, its tools folder in ``tmp_path``."""
    spec = importlib.util.spec_from_file_location("bootstrap", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "TOOLS", tmp_path / ".tools" / "uv-test")
    return module


def wheel_with_uv(binary: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as wheel:
        wheel.writestr("uv-0.13.9.data/scripts/uv", binary)
        wheel.writestr("uv-0.13.9.dist-info/METADATA", "Name: uv\n")
    return buffer.getvalue()


def serve(monkeypatch: pytest.MonkeyPatch, module: ModuleType, body: bytes, pinned: str) -> None:
    """PyPI, as far as the script sees it: ``body`` at the pinned wheel's URL."""
    monkeypatch.setattr(module, "_wheel", lambda: ("aa/bb/uv.whl", pinned))
    monkeypatch.setattr(module.urllib.request, "urlopen", lambda url, timeout: io.BytesIO(body))


def test_a_wheel_of_another_digest_is_refused_and_nothing_is_written(
    bootstrap: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tampered = wheel_with_uv(b"#!/bin/sh\necho not uv\n")
    serve(monkeypatch, bootstrap, tampered, pinned="0" * 64)
    with pytest.raises(SystemExit) as exit_info:
        bootstrap.uv_binary()
    assert exit_info.value.code == 1
    assert "refusing to use it" in capsys.readouterr().err
    assert not bootstrap.TOOLS.parent.exists() or not any(bootstrap.TOOLS.parent.iterdir())


def test_the_pinned_wheel_is_unpacked_to_an_executable_uv(
    bootstrap: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheel = wheel_with_uv(b"#!/bin/sh\necho uv\n")
    serve(monkeypatch, bootstrap, wheel, pinned=hashlib.sha256(wheel).hexdigest())
    binary = bootstrap.uv_binary()
    assert binary == bootstrap.TOOLS / "uv"
    assert binary.read_bytes() == b"#!/bin/sh\necho uv\n"
    assert os.access(binary, os.X_OK)
    # The wheel itself is not kept, only the binary.
    assert sorted(p.name for p in bootstrap.TOOLS.iterdir()) == ["uv"]


def test_the_pins_name_real_pypi_wheels_of_the_pinned_version(bootstrap: ModuleType) -> None:
    for path, sha256 in bootstrap.UV_WHEELS.values():
        assert path.split("/")[-1].startswith(f"uv-{bootstrap.UV_VERSION}-py3-none-")
        assert len(bytes.fromhex(sha256)) == 32
