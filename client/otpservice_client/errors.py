"""Every problem otpservice answers, as an exception: one class per stable ``code``.

::

    OtpError                        base: status, code, detail (and the problem's members)
    ├── InvalidRequest              400 invalid_request
    │   ├── InvalidPhone            400 invalid_phone
    │   ├── InvalidClientIp         400 invalid_client_ip
    │   ├── InvalidCodeFormat       400 invalid_code_format (costs no attempt)
    │   ├── InvalidDestination      400 invalid_destination
    │   ├── InvalidPeriod           400 invalid_period
    │   ├── InvalidSubject          400 invalid_subject
    │   └── InvalidLabel            400 invalid_label
    ├── IncorrectCode               400 incorrect_code (attempts_left)
    ├── Unauthorized                401 unauthorized
    ├── Forbidden                   403 forbidden
    ├── RecipientOptedOut           403 recipient_opted_out
    ├── DestinationNotAllowed       403 destination_not_allowed (rule)
    ├── NotFound
    │   ├── ChallengeNotFound       404 challenge_not_found
    │   └── FactorNotFound          404 factor_not_found
    ├── Conflict
    │   ├── IdempotencyKeyInUse     409 idempotency_key_in_use
    │   ├── CodeAlreadyUsed         409 code_already_used (attempts_left)
    │   └── FactorExists            409 factor_exists
    ├── Gone
    │   ├── ChallengeExpired        410 challenge_expired
    │   ├── ChallengeUsed           410 challenge_used
    │   └── FactorExpired           410 factor_expired
    ├── RequestTooLarge             413 request_too_large
    ├── UnsupportedMediaType        415 unsupported_media_type
    ├── IdempotencyKeyReused        422 idempotency_key_reused
    ├── Refused                     429 (retry_after when waiting helps)
    │   ├── TooManyAttempts         429 too_many_attempts
    │   ├── RateLimited             429 rate_limited (rule, retry_after)
    │   ├── SuspectedFraud          429 suspected_fraud (rule, retry_after)
    │   ├── NumberLocked            429 number_locked (retry_after)
    │   └── SubjectLocked           429 subject_locked (retry_after)
    ├── TotpNotConfigured           501 totp_not_configured
    └── ServiceUnavailable          503 (retry_after)
        ├── StoreUnavailable        503 store_unavailable
        └── HashingBusy             503 hashing_busy

A code this release does not know raises ``OtpError`` itself, with the status, code and detail.
Show end users generic messages (one for a wrong, used or expired code; the wait time when
rate limited or locked), never which rule tripped.
"""

from __future__ import annotations

from typing import Any


class OtpError(Exception):
    """A problem otpservice answered (RFC 9457), or a code this client does not know."""

    def __init__(self, status: int, code: str, detail: str, problem: dict[str, Any]) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.problem = problem
        self.attempts_left: int | None = _int(problem.get("attempts_left"))
        self.retry_after: int | None = _int(problem.get("retry_after"))
        rule = problem.get("rule")
        self.rule: str | None = rule if isinstance(rule, str) else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class InvalidRequest(OtpError):
    """400: the request is malformed or a value is invalid."""


class InvalidPhone(InvalidRequest):
    """400: not an E.164 phone number."""


class InvalidClientIp(InvalidRequest):
    """400: ``client_ip`` is not an IP address."""


class InvalidCodeFormat(InvalidRequest):
    """400: not a code of the right form; it cost no attempt."""


class InvalidDestination(InvalidRequest):
    """400: no calling code or prefix (admin routes)."""


class InvalidPeriod(InvalidRequest):
    """400: an analytics period that is not one (admin routes)."""


class InvalidSubject(InvalidRequest):
    """400: a subject outside ``[!-~]{1,128}``."""


class InvalidLabel(InvalidRequest):
    """400: a label not 1 to 64 printable characters without ':'."""


class IncorrectCode(OtpError):
    """400: the code is wrong; ``attempts_left`` says how many remain."""


class Unauthorized(OtpError):
    """401: no valid bearer token."""


class Forbidden(OtpError):
    """403: the token lacks the route's scope."""


class RecipientOptedOut(OtpError):
    """403: the number opted out (replied STOP); nothing is sent to it."""


class DestinationNotAllowed(OtpError):
    """403: geo permissions refuse the number; ``rule`` says which."""


class NotFound(OtpError):
    """404: no such thing for this client."""


class ChallengeNotFound(NotFound):
    """404: unknown, forgotten or another client's challenge."""


class FactorNotFound(NotFound):
    """404: no such factor (or no active one) for this client's subject."""


class Conflict(OtpError):
    """409: the request conflicts with what is stored."""


class IdempotencyKeyInUse(Conflict):
    """409: the first request with this Idempotency-Key is still running."""


class CodeAlreadyUsed(Conflict):
    """409: an authenticator code of a step already used (a replay, counted as a failure)."""


class FactorExists(Conflict):
    """409: the subject has an active factor; replacing it needs ``current_code``."""


class Gone(OtpError):
    """410: it existed and can no longer be used."""


class ChallengeExpired(Gone):
    """410: the challenge expired, was cancelled or replaced."""


class ChallengeUsed(Gone):
    """410: the challenge was approved already."""


class FactorExpired(Gone):
    """410: the pending factor's time or attempts ran out; enrol again."""


class RequestTooLarge(OtpError):
    """413: the body is over the service's limit."""


class UnsupportedMediaType(OtpError):
    """415: the body is not JSON."""


class IdempotencyKeyReused(OtpError):
    """422: the same Idempotency-Key with another body."""


class Refused(OtpError):
    """429: policy refuses it; ``retry_after`` (seconds) when waiting helps."""


class TooManyAttempts(Refused):
    """429: the challenge's attempt budget is spent; it can never succeed."""


class RateLimited(Refused):
    """429: a send limit; ``rule`` names it, ``retry_after`` says when it would not."""


class SuspectedFraud(Refused):
    """429: the fraud guard paused codes to this destination."""


class NumberLocked(Refused):
    """429: too many failed codes for the number."""


class SubjectLocked(Refused):
    """429: too many wrong authenticator or recovery codes for the subject. Do not offer an
    SMS fallback now: it is what an attacker wants."""


class TotpNotConfigured(OtpError):
    """501: the service has no ``secrets.totp_key``."""


class ServiceUnavailable(OtpError):
    """503: retry after ``retry_after`` seconds."""


class StoreUnavailable(ServiceUnavailable):
    """503: Redis is down, slow or refusing writes."""


class HashingBusy(ServiceUnavailable):
    """503: the hashing queue is full."""


# Every problem code of the service's OpenAPI document, and its class (a test holds the two
# to each other).
PROBLEM_CLASSES: dict[str, type[OtpError]] = {
    "invalid_request": InvalidRequest,
    "invalid_phone": InvalidPhone,
    "invalid_client_ip": InvalidClientIp,
    "invalid_code_format": InvalidCodeFormat,
    "invalid_destination": InvalidDestination,
    "invalid_period": InvalidPeriod,
    "invalid_subject": InvalidSubject,
    "invalid_label": InvalidLabel,
    "incorrect_code": IncorrectCode,
    "unauthorized": Unauthorized,
    "forbidden": Forbidden,
    "recipient_opted_out": RecipientOptedOut,
    "destination_not_allowed": DestinationNotAllowed,
    "challenge_not_found": ChallengeNotFound,
    "factor_not_found": FactorNotFound,
    "idempotency_key_in_use": IdempotencyKeyInUse,
    "code_already_used": CodeAlreadyUsed,
    "factor_exists": FactorExists,
    "challenge_expired": ChallengeExpired,
    "challenge_used": ChallengeUsed,
    "factor_expired": FactorExpired,
    "request_too_large": RequestTooLarge,
    "unsupported_media_type": UnsupportedMediaType,
    "idempotency_key_reused": IdempotencyKeyReused,
    "too_many_attempts": TooManyAttempts,
    "rate_limited": RateLimited,
    "suspected_fraud": SuspectedFraud,
    "number_locked": NumberLocked,
    "subject_locked": SubjectLocked,
    "totp_not_configured": TotpNotConfigured,
    "store_unavailable": StoreUnavailable,
    "hashing_busy": HashingBusy,
}


def error_from(status: int, problem: dict[str, Any]) -> OtpError:
    """The exception of a problem body (its ``code``), or ``OtpError`` for a code not known."""
    code = problem.get("code")
    detail = problem.get("detail")
    code_text = code if isinstance(code, str) else ""
    kind = PROBLEM_CLASSES.get(code_text, OtpError)
    return kind(status, code_text, detail if isinstance(detail, str) else "", problem)
