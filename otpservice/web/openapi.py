"""The spec and the API docs: what each route declares, built into ``/openapi/openapi.json``.

A route declares once who may call it and which problem codes it answers with
(``documented``); Litestar derives paths, bodies and the statuses from the handlers, and
``openapi_document`` adds what it cannot: each operation's ``code`` enum per status, the bearer
scheme with the scope an operation needs, the events the service POSTs (``webhooks``) and the
constraints the use cases enforce rather than the wire Structs. The docs page is Swagger UI from
files the package ships (``static/swagger-ui``): no CDN, a pod has no internet.
"""

from __future__ import annotations

import copy
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import msgspec
from litestar import Request, Response, Router
from litestar.enums import MediaType
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, OpenAPIRenderPlugin
from litestar.static_files import create_static_files_router

from otpservice import __version__
from otpservice.phone import E164_PATTERN
from otpservice.usecases.events import EVENT_DATA
from otpservice.usecases.factors import SUBJECT_PATTERN
from otpservice.web.problems import (
    PROBLEM_JSON,
    PROBLEM_STATUS,
    ProblemCode,
    problem_response,
    problem_responses,
)
from otpservice.web.schemas import Problem

if TYPE_CHECKING:
    from litestar import Litestar

# Who may call a route: a token's scope, anyone (probes, provider webhooks), or the docs rule
# (open unless tokens are configured, never on the pod listener).
Access = Literal["otp", "admin", "public"]
DOCS_PATH = "/openapi"
SPEC_PATH = f"{DOCS_PATH}/openapi.json"
ASSETS_PATH = f"{DOCS_PATH}/assets"
# The page and its assets hold nothing secret: they open without a token (the spec does not).
DOCS_PAGE_PATH = f"{DOCS_PATH}/swagger"
_STATIC = Path(str(files("otpservice.web") / "static"))

_AUTH_CODES: frozenset[ProblemCode] = frozenset({"unauthorized", "forbidden"})
_JSON_BODY_CODES: frozenset[ProblemCode] = frozenset(
    {"invalid_request", "request_too_large", "unsupported_media_type"}
)


def documented(
    access: Access, *codes: ProblemCode, json_body: bool = False, admin_too: bool = False
) -> dict[str, Any]:
    """A route decorator's ``opt``, ``responses`` and ``security``, from what the route declares.

    ``codes`` are the problems its own logic answers with; a token route adds ``unauthorized``
    and ``forbidden``, a JSON route the body's ``invalid_request``, ``request_too_large`` and
    ``unsupported_media_type``. ``admin_too``: the ``admin`` scope may call it as well (the
    handler decides what more it may do).
    """
    problems = frozenset(codes)
    if access != "public":
        problems |= _AUTH_CODES
    if json_body:
        problems |= _JSON_BODY_CODES
    opt: dict[str, Any] = {"problems": problems, "json_body": json_body}
    if access == "public":
        opt["public"] = True
    else:
        opt["scope"] = access
        opt["admin_too"] = admin_too
    route: dict[str, Any] = {"opt": opt, "responses": problem_responses(problems)}
    if access != "public":
        route["security"] = [{"bearer": [access]}, *([{"bearer": ["admin"]}] if admin_too else [])]
    return route


def openapi_document(app: Litestar) -> dict[str, Any]:
    """The app's spec as served and committed: Litestar's, finished with the declarations."""
    cached: dict[str, Any] | None = app.state.get("openapi_document")
    if cached is None:
        cached = copy.deepcopy(app.openapi_schema.to_schema())
        _add_problem_codes(cached, app)
        _add_security(cached)
        _add_constraints(cached, app)
        _add_webhooks(cached)
        app.state["openapi_document"] = cached
    return cached


def declared_problems(app: Litestar) -> dict[tuple[str, str], frozenset[ProblemCode]]:
    """(path as in the spec, lower-case method) -> the problem codes its route declares."""
    found = {}
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            problems = handler.opt.get("problems")
            if problems is not None:
                for method in handler.http_methods:
                    found[(route.path_format, method.lower())] = problems
    return found


def _add_problem_codes(document: dict[str, Any], app: Litestar) -> None:
    problem_ref = {"$ref": "#/components/schemas/Problem"}
    for (path, method), problems in declared_problems(app).items():
        operation = document["paths"][path][method]
        for status, response in operation["responses"].items():
            if PROBLEM_JSON not in response.get("content", {}):
                continue
            codes = sorted(c for c in problems if str(PROBLEM_STATUS[c]) == status)
            response["content"][PROBLEM_JSON]["schema"] = {
                "allOf": [
                    problem_ref,
                    {"type": "object", "properties": {"code": {"type": "string", "enum": codes}}},
                ]
            }


def _add_security(document: dict[str, Any]) -> None:
    document.setdefault("components", {})["securitySchemes"] = {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "A token from `api_tokens` (the config holds its SHA-256). Each "
            "operation names the scope it needs: `otp` or `admin`. With no tokens configured "
            "(a sidecar trusting its pod, or `--dev`) every caller has both.",
        }
    }


def _add_constraints(document: dict[str, Any], app: Litestar) -> None:
    """What the use cases check beyond the wire Structs, so a client sees it in the spec."""
    schemas = document["components"]["schemas"]
    digits = app.state.runtime.settings.code.digits
    create = schemas["ChallengeCreate"]["properties"]
    create["phone"]["pattern"] = E164_PATTERN
    # The shortest address is "::"; the use case refuses anything ipaddress does not parse.
    create["client_ip"]["minLength"] = 2
    for name in ("FactorCreate", "TotpVerify", "RecoveryUse"):
        schemas[name]["properties"]["subject"].update(
            {"pattern": SUBJECT_PATTERN, "minLength": 1, "maxLength": 128}
        )
    schemas["FactorCreate"]["properties"]["label"].update({"minLength": 1, "maxLength": 64})
    for name, field in (("FactorActivate", "code"), ("TotpVerify", "code")):
        schemas[name]["properties"][field]["pattern"] = "^([0-9]{6}|[0-9]{8})$"
    schemas["VerifyRequest"]["properties"]["code"].update(
        {"pattern": f"^[0-9]{{{digits}}}$", "minLength": digits, "maxLength": digits}
    )
    for item in document["paths"].values():
        for operation in item.values():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path" and parameter["name"] == "phone":
                    parameter["schema"]["pattern"] = E164_PATTERN
                if parameter["in"] == "path" and parameter["name"] == "destination":
                    parameter["schema"]["pattern"] = r"^\+[0-9]{1,15}$"


def _add_webhooks(document: dict[str, Any]) -> None:
    """The events the service POSTs to ``events.callback_url``, signed (Standard Webhooks)."""
    _, components = msgspec.json.schema_components(
        list(dict.fromkeys(EVENT_DATA.values())), ref_template="#/components/schemas/{name}"
    )
    document["components"]["schemas"].update(components)
    signature_headers = {
        name: {"required": True, "schema": {"type": "string"}, "description": description}
        for name, description in {
            "webhook-id": "Stable per event: drop a repeat (delivery is at least once).",
            "webhook-timestamp": "Unix seconds; refuse one far from now.",
            "webhook-signature": "`v1,` and the base64 HMAC-SHA256 of "
            "`{id}.{timestamp}.{body}` under the `events.secret`.",
        }.items()
    }
    webhooks = {}
    for event_type, data in EVENT_DATA.items():
        body = {
            "type": "object",
            "required": ["type", "timestamp", "data"],
            "properties": {
                "type": {"type": "string", "const": event_type},
                "timestamp": {"type": "string", "format": "date-time"},
                "data": {"$ref": f"#/components/schemas/{data.__name__}"},
            },
        }
        webhooks[event_type] = {
            "post": {
                "summary": (data.__doc__ or "").split("\n")[0],
                "operationId": f"event-{event_type}",
                "parameters": [
                    {"in": "header", "name": name, **header}
                    for name, header in signature_headers.items()
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": body}},
                },
                "responses": {"2XX": {"description": "Received; any other answer is retried."}},
            }
        }
    document["webhooks"] = webhooks


class SpecJson(JsonRenderPlugin):
    """``/openapi/openapi.json``: the finished document, not Litestar's bare one."""

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        return self.render_json(request, openapi_document(request.app))


class SwaggerPage(OpenAPIRenderPlugin):
    """``/openapi/swagger``: Swagger UI from the shipped assets. It loads the spec with the
    token the reader typed when the service needs one (kept in the tab's session storage)."""

    def __init__(self) -> None:
        super().__init__(path="/swagger", media_type=MediaType.HTML, favicon="")

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        return _SWAGGER_PAGE.encode()


_SWAGGER_PAGE = f"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>otpservice API</title>
  <link rel="icon" type="image/png" href="{ASSETS_PATH}/favicon-32x32.png">
  <link rel="stylesheet" href="{ASSETS_PATH}/swagger-ui.css">
</head>
<body>
  <form id="token-form" hidden style="font-family: sans-serif; margin: 2em">
    <p>This service needs a token with the <code>admin</code> scope to show its API.</p>
    <p id="token-refused" hidden>That token was refused.</p>
    <input id="token" type="password" autocomplete="off" placeholder="token" size="50">
    <button type="submit">Open</button>
  </form>
  <div id="swagger-ui"></div>
  <script src="{ASSETS_PATH}/swagger-ui-bundle.js"></script>
  <script src="{ASSETS_PATH}/docs.js" data-spec="{SPEC_PATH}"></script>
</body>
</html>
"""


def _docs_not_found(response: Response[Any]) -> Response[Any]:
    """Litestar answers unknown paths under /openapi with an HTML page: make it a problem."""
    if response.status_code == 404 and response.media_type != PROBLEM_JSON:
        return problem_response(
            Problem(
                title="Not Found",
                status=404,
                detail="no such page of the API docs",
                code="not_found",
                instance=None,
            )
        )
    return response


def openapi_config() -> OpenAPIConfig:
    """Where the spec and the docs page are served, and who may open them (``docs`` access)."""
    docs_router = Router(
        DOCS_PATH,
        route_handlers=[
            create_static_files_router(
                path="/assets",
                # Swagger UI as vendored, and the script that starts it.
                directories=[_STATIC / "swagger-ui", _STATIC / "docs"],
                opt={"docs": True, "docs_page": True},
                include_in_schema=False,
            )
        ],
        opt={"docs": True},
        include_in_schema=False,
        after_request=_docs_not_found,
    )
    return OpenAPIConfig(
        title="otpservice",
        version=__version__,
        description="Issue and verify SMS one-time codes. Errors are RFC 9457 problems with a "
        "stable `code`, listed per operation and status.",
        path=DOCS_PATH,
        openapi_router=docs_router,
        render_plugins=[SpecJson(), SwaggerPage()],
    )
