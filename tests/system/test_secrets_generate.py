"""``otpservice secrets generate``, the production example it feeds, and ``config check
--no-secrets`` on the Kubernetes config: the commands as a user runs them."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from otpservice.cli.secrets import GENERATED, ROTATION_ONLY
from otpservice.config.schema import SECRET_NAMES

ROOT = Path(__file__).parents[2]
PRODUCTION = ROOT / "examples" / "production.toml"
K8S_CONFIG = ROOT / "k8s" / "components" / "config" / "otpservice.toml"
GENERATED_FILES = {
    "pepper",
    "index-key",
    "outbox-key",
    "totp-key",
    "redis-password",
    "redis-sentinel-password",
    "acs-webhook-secret",
    "events-secret",
    "api-token",
}
# What an operator adds from the Azure portal (the only secret not ours to generate).
ACS_CONNECTION_STRING = "endpoint=https://example.communication.azure.com/;accesskey=" + (
    base64.b64encode(b"k" * 32).decode()
)


def otpservice(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``otpservice ARGS`` in a process, with no OTP_* variable but those of ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTP_")}
    return subprocess.run(
        [sys.executable, "-m", "otpservice", *args],
        capture_output=True,
        text=True,
        env={**clean, **(env or {})},
        timeout=60,
    )


def generate(directory: Path) -> subprocess.CompletedProcess[str]:
    result = otpservice("secrets", "generate", str(directory))
    assert result.returncode == 0, result.stderr
    return result


def printed_digest(output: str) -> str:
    match = re.search(r"^API token sha256: ([0-9a-f]{64})$", output, re.MULTILINE)
    assert match, output
    return match.group(1)


def test_generate_writes_owner_only_files_and_prints_no_value(tmp_path: Path) -> None:
    directory = tmp_path / "new" / "secrets"
    result = generate(directory)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert {path.name for path in directory.iterdir()} == GENERATED_FILES
    printed = result.stdout + result.stderr
    for path in directory.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
        value = path.read_text().strip()
        assert len(value) >= 32, path.name
        assert value not in printed, f"{path.name}'s value was printed"
        assert path.name in result.stdout
    # The digest printed is the API token's, and the config lines to paste name the files.
    token = (directory / "api-token").read_text().strip()
    assert printed_digest(result.stdout) == hashlib.sha256(token.encode()).hexdigest()
    assert f'pepper_file = "{directory / "pepper"}"' in result.stdout
    assert f'events_secret_file = "{directory / "events-secret"}"' in result.stdout
    # A second run makes different secrets.
    again = tmp_path / "again"
    generate(again)
    assert (again / "pepper").read_text() != (directory / "pepper").read_text()


@pytest.mark.parametrize("present", ["pepper", "notes.txt"])
def test_generate_refuses_a_directory_with_files_and_changes_nothing(
    tmp_path: Path, present: str
) -> None:
    directory = tmp_path / "secrets"
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)
    (directory / present).write_text("an existing secret\n")
    before = {path.name: path.read_bytes() for path in directory.iterdir()}
    result = otpservice("secrets", "generate", str(directory))
    assert result.returncode == 1
    assert present in result.stderr
    assert "never overwritten" in result.stderr
    assert "nothing was written" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert {path.name: path.read_bytes() for path in directory.iterdir()} == before
    assert stat.S_IMODE(directory.stat().st_mode) == 0o755


def test_generate_refuses_a_file_in_place_of_the_directory(tmp_path: Path) -> None:
    target = tmp_path / "secrets"
    target.write_text("not a directory")
    result = otpservice("secrets", "generate", str(target))
    assert result.returncode == 1
    assert "not a directory" in result.stderr
    assert target.read_text() == "not a directory"


def test_generate_fills_an_empty_directory_and_closes_it_to_others(tmp_path: Path) -> None:
    directory = tmp_path / "secrets"
    directory.mkdir()
    directory.chmod(0o755)
    generate(directory)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert {path.name for path in directory.iterdir()} == GENERATED_FILES


def test_every_secret_is_generated_or_is_a_rotations_old_value() -> None:
    # A secret added to the schema must be added to `secrets generate` (or be rotation-only).
    generated = {item.name for item in GENERATED}
    assert generated.isdisjoint(ROTATION_ONLY)
    assert generated | set(ROTATION_ONLY) == set(SECRET_NAMES)


def production_config(tmp_path: Path) -> Path:
    """examples/production.toml pointed at a freshly generated directory, with the printed
    digest pasted in, as its header tells an operator to do."""
    secrets = tmp_path / "secrets"
    digest = printed_digest(generate(secrets).stdout)
    (secrets / "acs-connection-string").write_text(ACS_CONNECTION_STRING + "\n")
    text = PRODUCTION.read_text()
    assert "/etc/otpservice/secrets/" in text
    placeholder = re.search(r'^token_sha256 = "(REPLACE[^"]*)"$', text, re.MULTILINE)
    assert placeholder, "the example's token placeholder moved"
    text = text.replace("/etc/otpservice/secrets", str(secrets)).replace(
        placeholder.group(1), digest
    )
    config = tmp_path / "otpservice.toml"
    config.write_text(text)
    return config


def test_the_generated_secrets_make_the_production_example_pass_config_check(
    tmp_path: Path,
) -> None:
    result = otpservice("config", "check", str(production_config(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout
    assert "api_tokens                          app" in result.stdout
    assert "not checked" not in result.stdout


def test_the_production_example_is_refused_until_the_digest_is_pasted(tmp_path: Path) -> None:
    config = production_config(tmp_path)
    text = config.read_text()
    config.write_text(re.sub(r'token_sha256 = "[0-9a-f]{64}"', 'token_sha256 = "REPLACE"', text))
    result = otpservice("config", "check", str(config))
    assert result.returncode == 2
    assert "api_tokens[0].token_sha256" in result.stderr
    assert "64 lowercase hexadecimal digits" in result.stderr
    assert "regex" not in result.stderr


def test_a_generated_secret_that_was_damaged_is_refused_naming_its_file(tmp_path: Path) -> None:
    config = production_config(tmp_path)
    outbox_key = tmp_path / "secrets" / "outbox-key"
    outbox_key.write_text("not-a-key\n")
    result = otpservice("config", "check", str(config))
    assert result.returncode == 2
    assert "secrets.outbox_key" in result.stderr
    assert f"the file {outbox_key}" in result.stderr
    assert "not-a-key" not in result.stderr


K8S_ENV = {"OTP_REDIS__URL": "rediss://redis.example.internal:6380/0"}


def test_the_kubernetes_config_passes_without_secrets_outside_a_pod() -> None:
    assert not Path("/run/secrets/otpservice/pepper").exists()
    result = otpservice("config", "check", "--no-secrets", str(K8S_CONFIG), env=K8S_ENV)
    assert result.returncode == 0, result.stderr
    assert "the secrets: they were not checked" in result.stdout
    assert "not read: secrets.pepper_file = /run/secrets/otpservice/pepper" in result.stdout
    assert "not read: sms.providers[1].auth_token_file" in result.stdout
    assert "code.ttl_seconds" in result.stdout  # the limits table, as without the flag


def test_the_kubernetes_config_fails_with_secrets_naming_the_missing_file() -> None:
    result = otpservice("config", "check", str(K8S_CONFIG), env=K8S_ENV)
    assert result.returncode == 2
    assert "secrets.pepper_file: cannot read /run/secrets/otpservice/pepper" in result.stderr
    assert "Traceback" not in result.stderr


def test_no_secrets_still_checks_everything_else(tmp_path: Path) -> None:
    broken = tmp_path / "otpservice.toml"
    broken.write_text(K8S_CONFIG.read_text().replace("port = 8081", "port = 8080"))
    result = otpservice("config", "check", "--no-secrets", str(broken), env=K8S_ENV)
    assert result.returncode == 2
    assert "pod_listener.port must differ" in result.stderr
    # Nor does it excuse a required secret that is not given at all.
    text = K8S_CONFIG.read_text()
    missing = re.sub(r"^pepper_file = .*$", "", text, flags=re.MULTILINE)
    broken.write_text(missing)
    result = otpservice("config", "check", "--no-secrets", str(broken), env=K8S_ENV)
    assert result.returncode == 2
    assert "secrets.pepper is not set" in result.stderr
