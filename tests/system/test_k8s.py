"""The Kubernetes manifests: every overlay renders with a current kustomize, passes the
Kubernetes schemas (1.29, the first with native sidecars, and the newest), and is hardened."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from otpservice.validation import load_settings

K8S = Path(__file__).parents[2] / "k8s"
OVERLAYS = [
    "base",
    "overlays/sidecar-example-redis",
    "overlays/sidecar-external-redis",
    "overlays/standalone",
]
VERSIONS = ["1.29.0", kubernetes_validate.latest_version()]
# Fixed, and strong enough for the settings checks (what `secrets generate` writes).
SECRET_FILES = {
    "pepper": "pV8m1Qe3rT6yU9iO2pA5sD7fG0hJ4kLz",
    "index-key": "iX3c6Vb9Nm2Qw5Er8Ty1Ui4Op7As0Df",
    "outbox-key": base64.b64encode(bytes(range(1, 33))).decode(),
    "totp-key": base64.b64encode(bytes(range(40, 72))).decode(),
    "redis-password": "redis-password",
    "acs-connection-string": "endpoint=https://x.communication.azure.com/;accesskey="
    + base64.b64encode(b"k" * 32).decode(),
    "twilio-auth-token": "t" * 32,
    "acs-webhook-secret": "wK2j5Hg8Fd1Sa4Lp7Ok0Ij3Uh6Yg9Tf",
    "events-secret": "whsec_" + base64.b64encode(bytes(range(100, 132))).decode(),
}


def render(overlay: str) -> list[dict[str, Any]]:
    kubectl = Path(sys.executable).parent / "kubectl"
    output = subprocess.run(
        [str(kubectl), "kustomize", str(K8S / overlay)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return [doc for doc in yaml.safe_load_all(output) if doc]


def pod_specs(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        d["spec"]["template"]["spec"] for d in docs if d["kind"] in ("Deployment", "StatefulSet")
    ]


def otpservice_container(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], bool]:
    """The otpservice container, and whether it runs as a native sidecar."""
    for spec in pod_specs(docs):
        for c in spec.get("initContainers", []):
            if c["name"] == "otpservice":
                return c, True
        for c in spec["containers"]:
            if c["name"] == "otpservice":
                return c, False
    raise AssertionError("no otpservice container")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlays_render_and_pass_the_schemas(overlay: str) -> None:
    docs = render(overlay)
    assert docs
    for doc in docs:
        for version in VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_is_hardened(overlay: str) -> None:
    docs = render(overlay)
    for spec in pod_specs(docs):
        assert spec["automountServiceAccountToken"] is False
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, container["name"]
            assert context["capabilities"]["drop"] == ["ALL"], container["name"]
            assert context["readOnlyRootFilesystem"] is True, container["name"]
            assert context["runAsNonRoot"] is True
            assert container["resources"]["limits"]["memory"], container["name"]
            assert container["resources"]["requests"], container["name"]
            assert all("subPath" not in m for m in container.get("volumeMounts", []))
    # Secrets are never rendered (you create the Secret), nor given as literals.
    assert not [d for d in docs if d["kind"] == "Secret"]
    otp, _ = otpservice_container(docs)
    secret_words = ("PEPPER", "KEY", "PASSWORD", "SECRET", "AUTH_TOKEN")
    for variable in otp.get("env", []):
        assert not any(word in variable["name"] for word in secret_words), variable["name"]
    kinds = {d["kind"] for d in docs}
    assert "NetworkPolicy" in kinds
    for policy in (d for d in docs if d["kind"] == "NetworkPolicy"):
        assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_otpservice_probes_the_pod_listener_and_reads_a_config_directory(overlay: str) -> None:
    docs = render(overlay)
    container, sidecar = otpservice_container(docs)
    assert sidecar == (overlay != "overlays/standalone")
    if sidecar:
        assert container["restartPolicy"] == "Always"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["otp-pod"] == 8081
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] == "otp-pod"
    # Liveness never depends on Redis.
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/etc/otpservice"]["readOnly"] is True
    assert mounts["/run/secrets/otpservice"]["readOnly"] is True


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_rendered_config_is_valid(overlay: str, tmp_path: Path) -> None:
    docs = render(overlay)
    [config_map] = [
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "otpservice-config"
    ]
    for name, value in SECRET_FILES.items():
        (tmp_path / name).write_text(value)
    text = config_map["data"]["otpservice.toml"].replace("/run/secrets/otpservice", str(tmp_path))
    (tmp_path / "otpservice.toml").write_text(text)
    container, _ = otpservice_container(docs)
    environ = {v["name"]: v["value"] for v in container.get("env", [])}
    settings = load_settings(tmp_path / "otpservice.toml", environ=environ)
    assert settings.pod_listener is not None
    assert settings.pod_listener.port == 8081
    assert settings.redis.url is not None
    if overlay != "overlays/standalone":
        assert settings.host == "127.0.0.1"  # the API stays on loopback
    else:
        assert settings.api_tokens  # exposed, so behind tokens


def test_the_standalone_overlay_has_a_budget_and_an_autoscaler() -> None:
    kinds = {d["kind"] for d in render("overlays/standalone")}
    assert {"PodDisruptionBudget", "HorizontalPodAutoscaler", "Service"} <= kinds


def test_the_example_redis_never_evicts_and_persists() -> None:
    conf = (K8S / "components" / "redis-example" / "redis.conf").read_text()
    assert "maxmemory-policy noeviction" in conf
    assert "appendonly yes" in conf
    assert os.path.exists(K8S / "base" / "secret.example.yaml")
