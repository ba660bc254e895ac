from __future__ import annotations

import json
from pathlib import Path

from otpservice.cli import openapi_document

SPEC = Path(__file__).parents[2] / "openapi" / "openapi.json"


def test_committed_spec_matches_the_app() -> None:
    assert SPEC.read_text() == openapi_document(), (
        "openapi/openapi.json is stale: "
        "run `uv run otpservice openapi --output openapi/openapi.json`"
    )


def test_spec_documents_every_route_and_problem_responses() -> None:
    spec = json.loads(openapi_document())
    assert set(spec["paths"]) >= {
        "/challenge",
        "/challenge/{challenge_id}",
        "/verify",
        "/healthz",
        "/readyz",
    }
    verify = spec["paths"]["/verify"]["post"]["responses"]
    for status in ("400", "404", "410", "429", "503"):
        assert "application/problem+json" in verify[status]["content"]
