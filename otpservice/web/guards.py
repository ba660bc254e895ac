"""Who may call (bearer tokens with scopes, or the trusted pod), body media types, and no
JSON key twice.

``authorize`` runs before every handler of the app, so a new route is protected by default: it
needs a token with the ``admin`` scope unless its handler says ``opt={"scope": ...}`` or
``opt={"public": True}`` (health probes and provider webhooks). The API docs
(``opt={"docs": True}``) are open when no tokens are configured; with tokens their page and
assets (``docs_page``) stay open, holding nothing secret, and the spec needs the ``admin``
scope. A handler with ``opt={"json_body": True}`` (every API route with a JSON body; the
provider webhooks are public and their own) also gets its media type checked and its body
refused when an object holds a key twice. It is the app's ``before_request`` hook rather than
a Litestar guard: Litestar copies the handler object for every guard call, on every request,
which cost more than the check itself. It still runs before the body is decoded or any
handler code runs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from litestar import Response
from litestar.exceptions import ClientException, NotFoundException
from litestar.status_codes import HTTP_415_UNSUPPORTED_MEDIA_TYPE

from otpservice.errors import Forbidden, InvalidInput, Unauthorized
from otpservice.web.openapi import DOCS_PAGE_PATH

if TYPE_CHECKING:
    from litestar import Request

    from otpservice.config.schema import ApiToken

# The client name used when no tokens are configured (a sidecar trusting its pod).
POD_CLIENT = "default"
ALL_SCOPES = frozenset({"otp", "admin"})


@dataclass(frozen=True, slots=True)
class ApiClient:
    """An authenticated caller and what it may do."""

    name: str
    scopes: frozenset[str]


class Authenticator:
    """Checks the ``Authorization`` header against the configured tokens."""

    def __init__(self, tokens: list[ApiToken]) -> None:
        self._by_digest = {
            t.token_sha256: ApiClient(name=t.client, scopes=frozenset(t.scopes)) for t in tokens
        }

    @property
    def open(self) -> bool:
        """No tokens are configured: every caller is the pod's client, with every scope."""
        return not self._by_digest

    def authenticate(self, authorization: str | None) -> ApiClient:
        """The caller for this header value.

        Raises:
            Unauthorized: a missing or unknown token.
        """
        if not self._by_digest:
            return ApiClient(name=POD_CLIENT, scopes=ALL_SCOPES)
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("send 'Authorization: Bearer <token>'")
        # Tokens are long random strings, so a plain SHA-256 is a safe way to store them; the
        # lookup is by digest, which reveals nothing about the token's characters.
        client = self._by_digest.get(hashlib.sha256(token.strip().encode()).hexdigest())
        if client is None:
            raise Unauthorized("the bearer token is not valid")
        return client


def _allowed_methods(request: Request[Any, Any, Any]) -> Response[None]:
    """Litestar's automatic OPTIONS lists only the first handler's methods of a path: list all.

    The methods are no secret: a 405 lists them too, before any authentication.
    """
    paths = request.route_handler.paths
    methods = {m for route in request.app.routes if route.path in paths for m in route.methods}
    return Response(None, status_code=204, headers={"Allow": ", ".join(sorted(methods))})


async def authorize(request: Request[Any, Any, Any]) -> Response[None] | None:
    """Before every handler: authenticate the caller, require the handler's scope, check the body.

    Raises:
        Unauthorized, Forbidden; a 415 when a JSON route gets another media type; a 404 for
        any non-public route asked on the pod listener.

    Returns:
        The answer to an automatic OPTIONS request; None to go on to the handler.
    """
    opt = request.route_handler.opt
    if opt.get("public"):
        return None
    pod_port: int | None = request.app.state.pod_port
    if pod_port is not None and request.scope["server"] and request.scope["server"][1] == pod_port:
        # The pod-address listener serves the public routes only; the API is on loopback.
        raise NotFoundException()
    if request.method == "OPTIONS":
        # Litestar's automatic one: the only explicit OPTIONS route is public (returned above).
        return _allowed_methods(request)
    authenticator: Authenticator = request.app.state.authenticator
    if opt.get("docs") and (
        authenticator.open or opt.get("docs_page") or request.url.path == DOCS_PAGE_PATH
    ):
        return None
    scope = opt.get("scope", "admin")
    headers = request.headers
    client = authenticator.authenticate(headers.get("authorization"))
    if scope not in client.scopes and not (opt.get("admin_too") and "admin" in client.scopes):
        raise Forbidden(f"this token lacks the {scope!r} scope")
    request.state.api_client = client
    if opt.get("json_body"):
        media_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != "application/json":
            raise ClientException(
                "send the body as application/json", status_code=HTTP_415_UNSUPPORTED_MEDIA_TYPE
            )
        refuse_duplicate_keys(await request.body())
    return None


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise InvalidInput(f"the key {key[:40]!r} appears twice in one object")
        seen.add(key)
    return dict(pairs)


def refuse_duplicate_keys(body: bytes) -> None:
    """Refuse a JSON body with a key twice in one object, at any depth, before it is decoded:
    the decoder keeps the last, and a gateway, a log or a WAF that reads the first would see
    another request (``{"code": "<wrong>", "code": "<right>"}``). Numbers are not converted
    (Python refuses integers over 4300 digits where msgspec accepts them), and a body Python
    cannot parse is refused here rather than waved through to a decoder that might accept it.

    Raises:
        InvalidInput: ``invalid_request``, naming the key.
    """
    if not body:
        return
    try:
        json.loads(
            body,
            object_pairs_hook=_unique_pairs,
            parse_int=len,
            parse_float=len,
            parse_constant=len,
        )
    except InvalidInput:
        raise
    except (ValueError, RecursionError):
        raise InvalidInput("the body is not valid JSON") from None
