"""Every problem a test sees must be one its operation documents: status and ``code`` enum."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from otpservice.web.openapi import openapi_document

if TYPE_CHECKING:
    import httpx
    from litestar import Litestar

PROBLEM_JSON = "application/problem+json"


class DocumentedProblems:
    """An httpx response hook: fails the request's test on a problem its operation omits."""

    def __init__(self, app: Litestar) -> None:
        paths: dict[str, Any] = openapi_document(app)["paths"]
        self._operations = [
            (re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$"), item)
            for path, item in paths.items()
        ]

    def documented_codes(self, method: str, path: str, status: int) -> list[str] | None:
        """The codes the spec allows for this answer; None when the spec has no such operation."""
        for pattern, item in self._operations:
            if pattern.match(path) and method.lower() in item:
                response = item[method.lower()]["responses"].get(str(status))
                if response is None:
                    return []
                schema = response["content"][PROBLEM_JSON]["schema"]
                enum: list[str] = schema["allOf"][1]["properties"]["code"]["enum"]
                return enum
        return None

    async def __call__(self, response: httpx.Response) -> None:
        if not response.headers.get("content-type", "").startswith(PROBLEM_JSON):
            return
        await response.aread()
        request = response.request
        codes = self.documented_codes(request.method, request.url.path, response.status_code)
        if codes is None:
            return  # an unknown path or method: its 404 or 405 belongs to no operation
        code = response.json()["code"]
        assert code in codes, (
            f"{request.method} {request.url.path} answered {response.status_code} {code}, "
            f"which its operation does not document (documented: {codes}): declare it in the "
            "route's documented(...)"
        )
