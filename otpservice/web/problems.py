"""The one place errors become HTTP: RFC 9457 ``application/problem+json`` with a stable code."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any, Literal

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi import ResponseSpec
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from otpservice.errors import (
    ChallengeGone,
    ChallengeNotFound,
    CodeAlreadyUsed,
    DestinationNotAllowed,
    FactorExists,
    FactorExpired,
    FactorNotFound,
    Forbidden,
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    IncorrectCode,
    InvalidInput,
    OtpError,
    RecipientOptedOut,
    Refused,
    TotpNotConfigured,
    Unauthorized,
    Unavailable,
)
from otpservice.web.schemas import Problem

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"

_STATUS: list[tuple[type[OtpError], int]] = [
    (InvalidInput, 400),
    (IncorrectCode, 400),
    (Unauthorized, 401),
    (Forbidden, 403),
    (RecipientOptedOut, 403),
    (DestinationNotAllowed, 403),
    (ChallengeNotFound, 404),
    (FactorNotFound, 404),
    (IdempotencyKeyInUse, 409),
    (CodeAlreadyUsed, 409),
    (FactorExists, 409),
    (ChallengeGone, 410),
    (FactorExpired, 410),
    (IdempotencyKeyReused, 422),
    (Refused, 429),
    (TotpNotConfigured, 501),
    (Unavailable, 503),
]

# Every stable ``code`` a problem can carry. Routes declare theirs (``documented``), and the
# spec lists them per operation and status.
ProblemCode = Literal[
    "invalid_request",
    "invalid_phone",
    "invalid_client_ip",
    "invalid_code_format",
    "invalid_destination",
    "invalid_period",
    "invalid_subject",
    "invalid_label",
    "incorrect_code",
    "unauthorized",
    "forbidden",
    "recipient_opted_out",
    "destination_not_allowed",
    "not_found",
    "challenge_not_found",
    "factor_not_found",
    "method_not_allowed",
    "idempotency_key_in_use",
    "code_already_used",
    "factor_exists",
    "challenge_expired",
    "challenge_used",
    "factor_expired",
    "request_too_large",
    "unsupported_media_type",
    "idempotency_key_reused",
    "too_many_attempts",
    "rate_limited",
    "suspected_fraud",
    "number_locked",
    "subject_locked",
    "totp_not_configured",
    "service_unavailable",
    "store_unavailable",
    "hashing_busy",
    "internal_error",
]
PROBLEM_STATUS: dict[ProblemCode, int] = {
    "invalid_request": 400,
    "invalid_phone": 400,
    "invalid_client_ip": 400,
    "invalid_code_format": 400,
    "invalid_destination": 400,
    "invalid_period": 400,
    "invalid_subject": 400,
    "invalid_label": 400,
    "incorrect_code": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "recipient_opted_out": 403,
    "destination_not_allowed": 403,
    "not_found": 404,
    "challenge_not_found": 404,
    "factor_not_found": 404,
    "method_not_allowed": 405,
    "idempotency_key_in_use": 409,
    "code_already_used": 409,
    "factor_exists": 409,
    "challenge_expired": 410,
    "challenge_used": 410,
    "factor_expired": 410,
    "request_too_large": 413,
    "unsupported_media_type": 415,
    "idempotency_key_reused": 422,
    "too_many_attempts": 429,
    "rate_limited": 429,
    "suspected_fraud": 429,
    "number_locked": 429,
    "subject_locked": 429,
    "totp_not_configured": 501,
    "service_unavailable": 503,
    "store_unavailable": 503,
    "hashing_busy": 503,
    "internal_error": 500,
}

# Framework errors by status, with the stable code each gets.
_HTTP_CODES: dict[int, ProblemCode] = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def problem_responses(codes: frozenset[ProblemCode]) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the statuses of these codes, each answering with a problem."""
    by_status: dict[int, list[str]] = {}
    for code in sorted(codes):
        by_status.setdefault(PROBLEM_STATUS[code], []).append(code)
    return {
        status: ResponseSpec(
            data_container=Problem,
            media_type=PROBLEM_JSON,
            generate_examples=False,
            description=f"{HTTPStatus(status).phrase}: `code` is {' or '.join(by_status[status])}",
        )
        for status in sorted(by_status)
    }


def status_of(error: OtpError) -> int:
    """The HTTP status for a domain error."""
    for kind, status in _STATUS:
        if isinstance(error, kind):
            return status
    return 500


def problem_response(problem: Problem, headers: dict[str, str] | None = None) -> Response[bytes]:
    """Encode a problem as ``application/problem+json``."""
    return Response(
        content=msgspec.json.encode(problem),
        status_code=problem.status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


def otp_error_handler(request: Request[Any, Any, Any], exc: OtpError) -> Response[bytes]:
    """Map a domain error to its problem."""
    status = status_of(exc)
    retry_after = exc.retry_after_seconds
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    if status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": 'Bearer realm="otpservice"'}
    problem = Problem(
        title=exc.title,
        status=status,
        detail=exc.detail,
        code=exc.code,
        instance=request.url.path,
        attempts_left=exc.attempts_left,
        rule=exc.rule,
        retry_after=retry_after,
    )
    return problem_response(problem, headers)


def http_error_handler(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    """Map framework errors (bad JSON, unknown route, wrong method, ...) to problems."""
    status = exc.status_code
    code = _HTTP_CODES.get(status, "http_error")
    detail = exc.detail
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list) and exc.extra:
        detail = "; ".join(
            f"{item.get('key', 'body')}: {item.get('message')}"
            if isinstance(item, dict)
            else str(item)
            for item in exc.extra
        )
    if status >= 500:
        # Framework details carry no request data; "client disconnected prematurely" (the
        # caller hung up mid-body) is the usual one and nobody is left to answer.
        log.warning("framework error %s on %s: %s", status, request.url.path, exc.detail)
        detail = "The server could not handle the request."
    problem = Problem(
        title=HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        code=code,
        instance=request.url.path,
    )
    headers = {k: v for k, v in (exc.headers or {}).items()}
    return problem_response(problem, headers or None)


def undecodable_body_handler(
    request: Request[Any, Any, Any], exc: RecursionError | UnicodeDecodeError
) -> Response[bytes]:
    """A body nested too deep, or not UTF-8, fails in the JSON decoder: a 400, not a 500."""
    problem = Problem(
        title=HTTPStatus.BAD_REQUEST.phrase,
        status=400,
        detail="the body is not valid JSON: nested too deep or not UTF-8",
        code="invalid_request",
        instance=request.url.path,
    )
    return problem_response(problem)


def unexpected_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """Last resort: log the error type, never its content or a stack trace to the client."""
    log.error("unexpected %s on %s", type(exc).__name__, request.url.path, exc_info=exc)
    problem = Problem(
        title="Internal error",
        status=HTTP_500_INTERNAL_SERVER_ERROR,
        detail="The server could not handle the request.",
        code="internal_error",
        instance=request.url.path,
    )
    return problem_response(problem)


EXCEPTION_HANDLERS = {
    OtpError: otp_error_handler,
    HTTPException: http_error_handler,
    RecursionError: undecodable_body_handler,
    UnicodeDecodeError: undecodable_body_handler,
    Exception: unexpected_error_handler,
}
