"""The errors otpservice raises, with stable codes; ``web/problems.py`` maps them to HTTP.

::

    OtpError                      base: ``code`` is the stable problem code
    ├── InvalidInput              bad request data        (invalid_request, invalid_phone,
    │                                                       invalid_code_format)
    ├── ChallengeNotFound         unknown id, or another client's challenge
    ├── ChallengeGone             no longer usable (410); not raised itself
    │   ├── ChallengeExpired      expired, cancelled or replaced   (challenge_expired)
    │   └── ChallengeUsed         already approved                 (challenge_used)
    ├── IncorrectCode             wrong code; attempts_left says what remains
    ├── Refused                   policy says no; retry_after_seconds when waiting helps
    │   ├── TooManyAttempts       the challenge's attempt budget is spent
    │   ├── RuleRefusal           a named rule; ``rule`` names it
    │   │   ├── RateLimited       a send limit
    │   │   └── SuspectedFraud    the fraud guard tripped for the destination
    │   ├── NumberLocked          too many failures for the number
    │   └── SubjectLocked         too many wrong TOTP or recovery codes for the subject
    ├── CodeAlreadyUsed           a TOTP code of a step already used (a replay)
    ├── FactorNotFound            no such authenticator-app factor for the calling client
    ├── FactorExists              the subject has an active factor already
    ├── FactorExpired             a pending factor's time or attempts ran out
    ├── TotpNotConfigured         secrets.totp_key is not set
    ├── IdempotencyConflict
    │   ├── IdempotencyKeyReused  same key, different request
    │   └── IdempotencyKeyInUse   same key, first request still running
    ├── Unauthorized              no valid bearer token
    ├── Forbidden                 the token lacks the scope
    ├── RecipientOptedOut         the number opted out: nothing is sent to it
    ├── DestinationNotAllowed     geo permissions refuse the number; ``rule`` names why
    └── Unavailable               retry later (503)
        ├── StoreUnavailable      Redis down, slow or refusing writes
        └── HashingBusy           the hashing queue is full

    ConfigError                   start-up: a setting is invalid (names the key)

Nothing here knows about HTTP.
"""

from __future__ import annotations


class OtpError(Exception):
    """Base of every error a request can end in.

    ``attempts_left``, ``rule`` and ``retry_after_seconds`` are None unless the error says
    them; the problem mapper reads them from every error.
    """

    code: str = "internal_error"
    title: str = "Internal error"
    attempts_left: int | None = None
    rule: str | None = None
    retry_after_seconds: int | None = None

    def __init__(self, detail: str | None = None, *, code: str | None = None) -> None:
        if code is not None:
            self.code = code
        self.detail = detail or self.title
        super().__init__(self.detail)


class InvalidInput(OtpError):
    """The request is malformed or a value is invalid; ``code`` says which."""

    code = "invalid_request"
    title = "Invalid request"


class ChallengeNotFound(OtpError):
    """No challenge with this id exists for the calling client."""

    code = "challenge_not_found"
    title = "Challenge not found"


class ChallengeGone(OtpError):
    """The challenge existed but can no longer be used: one of the two kinds below."""

    title = "Challenge no longer usable"


class ChallengeExpired(ChallengeGone):
    """The challenge expired, was cancelled or was replaced by a newer one."""

    code = "challenge_expired"
    title = "Challenge expired"


class ChallengeUsed(ChallengeGone):
    """The challenge was already approved."""

    code = "challenge_used"
    title = "Challenge already used"


class IncorrectCode(OtpError):
    """The submitted code does not match."""

    code = "incorrect_code"
    title = "Incorrect code"

    def __init__(self, attempts_left: int) -> None:
        self.attempts_left = attempts_left
        super().__init__(f"The code is incorrect; {attempts_left} attempt(s) left.")


class Refused(OtpError):
    """Policy refuses the request; ``retry_after_seconds`` is set when waiting helps."""


class TooManyAttempts(Refused):
    """The attempt budget of the challenge is spent; it can never be approved."""

    code = "too_many_attempts"
    title = "Too many attempts"

    def __init__(self, detail: str | None = None) -> None:
        self.attempts_left = 0
        super().__init__(detail or "The attempt budget is spent; request a new code.")


class RuleRefusal(Refused):
    """A named rule refuses the request; ``rule`` names it, ``retry_after_seconds`` says when
    it would not."""

    def __init__(self, rule: str, retry_after_seconds: int, detail: str) -> None:
        self.rule = rule
        self.retry_after_seconds = retry_after_seconds
        super().__init__(detail)


class RateLimited(RuleRefusal):
    """A send limit refuses the request."""

    code = "rate_limited"
    title = "Rate limited"

    def __init__(self, rule: str, retry_after_seconds: int) -> None:
        super().__init__(
            rule, retry_after_seconds, f"Limit {rule!r} reached; retry in {retry_after_seconds} s."
        )


class SuspectedFraud(RuleRefusal):
    """Few codes sent to this destination get verified: SMS pumping is suspected."""

    code = "suspected_fraud"
    title = "Suspected fraud"

    def __init__(self, rule: str, retry_after_seconds: int) -> None:
        super().__init__(
            rule,
            retry_after_seconds,
            "Codes to this destination are paused: too few of those sent were verified.",
        )


class NumberLocked(Refused):
    """The number failed too many codes and is locked for a while."""

    code = "number_locked"
    title = "Number locked"

    def __init__(self, retry_after_seconds: int) -> None:
        self.retry_after_seconds = retry_after_seconds
        super().__init__(
            f"Too many failed codes for this number; locked for {retry_after_seconds} s."
        )


class SubjectLocked(Refused):
    """The subject made too many wrong TOTP or recovery codes and is locked for a while."""

    code = "subject_locked"
    title = "Subject locked"

    def __init__(
        self, retry_after_seconds: int, detail: str | None = None, *, just_locked: bool = False
    ) -> None:
        self.retry_after_seconds = retry_after_seconds
        # This request locked the subject (its lockout event is sent once, for this one).
        self.just_locked = just_locked
        super().__init__(
            detail or f"Too many wrong codes for this user; locked for {retry_after_seconds} s."
        )

    @classmethod
    def recovery_blocked(cls, retry_after_seconds: int) -> SubjectLocked:
        """Recovery codes are refused for a while: too many wrong ones."""
        return cls(
            retry_after_seconds,
            "Too many wrong recovery codes for this user; recovery is blocked for a while.",
        )


class CodeAlreadyUsed(OtpError):
    """A TOTP code of a step at or before the last one used: a replay, counted as a failure."""

    code = "code_already_used"
    title = "Code already used"

    def __init__(self, attempts_left: int) -> None:
        self.attempts_left = attempts_left
        super().__init__("This code was already used; wait for the next one.")


class FactorNotFound(OtpError):
    """No such factor for the calling client (none, another client's, or removed)."""

    code = "factor_not_found"
    title = "Factor not found"


class FactorExists(OtpError):
    """The subject has an active factor: replacing it needs a code of it."""

    code = "factor_exists"
    title = "Factor exists"


class FactorExpired(OtpError):
    """A pending factor can no longer be activated: its time or its attempts ran out."""

    code = "factor_expired"
    title = "Factor expired"


class TotpNotConfigured(OtpError):
    """The authenticator-app routes need ``secrets.totp_key``."""

    code = "totp_not_configured"
    title = "Authenticator apps not configured"


class IdempotencyConflict(OtpError):
    """An Idempotency-Key cannot be honoured as given."""


class IdempotencyKeyReused(IdempotencyConflict):
    """The key was first used with a different request."""

    code = "idempotency_key_reused"
    title = "Idempotency key reused"


class IdempotencyKeyInUse(IdempotencyConflict):
    """The first request with this key has not finished yet."""

    code = "idempotency_key_in_use"
    title = "Idempotency key in use"


class Unauthorized(OtpError):
    """No valid bearer token was sent."""

    code = "unauthorized"
    title = "Unauthorized"


class Forbidden(OtpError):
    """The token is valid but lacks the route's scope."""

    code = "forbidden"
    title = "Forbidden"


class RecipientOptedOut(OtpError):
    """The number's owner opted out (replied STOP, or an operator did it): nothing is sent."""

    code = "recipient_opted_out"
    title = "Recipient opted out"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(
            detail
            or "the recipient opted out of these messages; they can reply START to the number "
            "that texted them to receive codes again"
        )


class DestinationNotAllowed(OtpError):
    """Geo permissions refuse the number (country, prefix or number type); ``rule`` says which."""

    code = "destination_not_allowed"
    title = "Destination not allowed"

    def __init__(self, rule: str, detail: str) -> None:
        self.rule = rule
        super().__init__(detail)


class Unavailable(OtpError):
    """A dependency cannot serve now; retry after ``retry_after_seconds``."""

    code = "service_unavailable"
    title = "Service unavailable"
    retry_after_seconds: int = 1


class StoreUnavailable(Unavailable):
    """Redis is unreachable, too slow, or refused a write."""

    code = "store_unavailable"
    title = "Store unavailable"
    retry_after_seconds = 2


class QueueWriteInDoubt(StoreUnavailable):
    """An entry may or may not have been added to a queue's shard ``shard`` (a timeout or a
    WAIT shortfall after the write may have run)."""

    def __init__(self, shard: int) -> None:
        super().__init__("the store could not confirm the write; retry shortly")
        self.shard = shard


class HashingBusy(Unavailable):
    """Too many hashes are queued; the process protects its memory limit."""

    code = "hashing_busy"
    title = "Too busy"
    retry_after_seconds = 1


class ConfigError(Exception):
    """A setting is invalid; the message names the key (``key``, when one is to blame)."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key
