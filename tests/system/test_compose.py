"""compose.yaml: valid against the Compose Specification's schema (no container engine here),
and the service it describes gets a config that `otpservice config check` passes, with the
secrets `otpservice secrets generate` writes."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).parents[2]
COMPOSE = ROOT / "compose.yaml"
SCHEMA = Path(__file__).parents[1] / "support" / "compose-spec.json"
# Where the otpservice container finds the files the copy-secrets service prepared.
SECRETS_IN_CONTAINER = "/run/secrets/otpservice"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return document


def validator() -> jsonschema.Draft201909Validator:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft201909Validator.check_schema(schema)
    return jsonschema.Draft201909Validator(schema)


def test_compose_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator().iter_errors(compose)]
    assert errors == []
    # The schema does catch a mistake (else the check above proves nothing).
    broken = copy.deepcopy(compose)
    broken["services"]["redis"]["healthcheck"]["intervall"] = "5s"
    assert list(validator().iter_errors(broken))


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> host path (relative to the compose file) or volume name."""
    found = {}
    for volume in service["volumes"]:
        source, target, *_ = volume.split(":")
        found[target] = source
    return found


def test_the_service_is_built_here_and_published_on_loopback_only(
    compose: dict[str, Any],
) -> None:
    service = compose["services"]["otpservice"]
    assert service["build"] == "."
    assert (ROOT / "Dockerfile").is_file()
    assert service["ports"] == ["127.0.0.1:8080:8080"]
    assert service["healthcheck"]["test"][0] == "CMD"
    assert "/readyz" in " ".join(service["healthcheck"]["test"])
    assert service["depends_on"]["redis"]["condition"] == "service_healthy"
    assert service["depends_on"]["copy-secrets"]["condition"] == ("service_completed_successfully")


def test_redis_keeps_an_append_only_file_and_needs_its_password(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    conf_source = mounts(redis)["/usr/local/etc/redis/redis.conf"]
    conf = (ROOT / conf_source).read_text().splitlines()
    assert "appendonly yes" in conf
    assert "maxmemory-policy noeviction" in conf
    assert "include /tmp/requirepass.conf" in conf
    command = " ".join(redis["command"])
    assert "/tmp/requirepass.conf" in command
    assert "/usr/local/etc/redis/redis.conf" in command
    assert "redis-password" in redis["secrets"]
    assert "redis-cli ping" in redis["healthcheck"]["test"][1]
    assert "REDISCLI_AUTH" in redis["healthcheck"]["test"][1]
    assert mounts(redis)["/data"] in compose["volumes"]


def test_no_secret_travels_in_the_environment(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for variable in service.get("environment", {}):
            assert not any(word in variable.upper() for word in ("PASSWORD", "SECRET", "KEY")), (
                name,
                variable,
            )


def test_the_service_gets_a_config_that_passes_config_check(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    service = compose["services"]["otpservice"]
    command = service["command"]
    config_in_container = command[command.index("--config") + 1]
    config_source = ROOT / mounts(service)[config_in_container]
    # The secrets: compose's file secrets are what `secrets generate` writes into ./secrets,
    # the copy-secrets service copies each into the volume the service reads them from.
    generated = tmp_path / "secrets"
    result = subprocess.run(
        [sys.executable, "-m", "otpservice", "secrets", "generate", str(generated)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    copier = compose["services"]["copy-secrets"]
    for name in copier["secrets"]:
        file = compose["secrets"][name]["file"]
        assert file == f"./secrets/{name}"
        assert (generated / name).is_file(), name
        assert name in " ".join(copier["command"])
    volume = mounts(copier)["/copy"]
    assert mounts(service)[SECRETS_IN_CONTAINER] == volume
    config_text = config_source.read_text()
    for line in config_text.splitlines():
        if "_file = " in line:
            path = line.split("=", 1)[1].strip().strip('"')
            assert path.startswith(f"{SECRETS_IN_CONTAINER}/"), line
            assert Path(path).name in copier["secrets"], line
    # The config and environment the container gets, with its secrets volume here.
    config = tmp_path / "otpservice.toml"
    config.write_text(config_text.replace(SECRETS_IN_CONTAINER, str(generated)))
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OTP_")}
    environ.update({str(k): str(v) for k, v in service["environment"].items()})
    checked = subprocess.run(
        [sys.executable, "-m", "otpservice", "config", "check", str(config)],
        capture_output=True,
        text=True,
        env=environ,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stderr
    assert "valid" in checked.stdout
    # The Redis it is given is the compose file's, and it listens where the port is published.
    assert urlsplit(environ["OTP_REDIS__URL"]).hostname in compose["services"]
    settings = tomllib.loads(config_text)
    assert settings["host"] == "0.0.0.0"
    assert service["ports"][0].endswith(f":{settings['port']}")
