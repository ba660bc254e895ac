"""What the client's calls return: typed ``msgspec`` Structs of the service's answers."""

from __future__ import annotations

from datetime import datetime  # noqa: TC003 (msgspec reads the annotations at run time)
from typing import Literal

import msgspec

ChallengeStatus = Literal["pending", "approved", "expired", "cancelled"]


class Answer(msgspec.Struct, frozen=True, kw_only=True):
    """Base of the answers: members a later release adds are ignored, not refused."""


class Challenge(Answer, frozen=True, kw_only=True):
    """A code was sent (or, for a replayed ``Idempotency-Key``, the first one's state now)."""

    challenge_id: str
    status: ChallengeStatus
    expires_at: datetime
    attempts_left: int
    resend_after: int
    # True when the service answered from the Idempotency-Key's record: no new SMS was sent.
    replayed: bool = False


class Approval(Answer, frozen=True, kw_only=True):
    """The code was right: the challenge is approved, once."""

    challenge_id: str
    status: Literal["approved"]
    approved_at: datetime


class Delivery(Answer, frozen=True, kw_only=True):
    """Where a challenge's SMS stands."""

    status: str
    provider: str | None = None
    message_id: str | None = None
    detail: str | None = None
    updated_at: datetime | None = None
    sent_at: datetime | None = None


class ChallengeState(Answer, frozen=True, kw_only=True):
    """A challenge as it stands (``get_challenge``, ``cancel_challenge``)."""

    challenge_id: str
    status: ChallengeStatus
    attempts_left: int
    created_at: datetime
    expires_at: datetime
    phone: str
    purpose: str
    delivery: Delivery


class Enrolment(Answer, frozen=True, kw_only=True):
    """A pending authenticator-app factor: the URI and QR code hold its secret, once."""

    factor_id: str
    type: Literal["totp"]
    status: Literal["pending"]
    otpauth_uri: str
    qr_svg: str
    expires_at: datetime


class Activation(Answer, frozen=True, kw_only=True):
    """The factor is active; its recovery codes are shown this once."""

    factor_id: str
    status: Literal["active"]
    recovery_codes: list[str]


class TotpApproval(Answer, frozen=True, kw_only=True):
    """An authenticator code was right, once."""

    status: Literal["approved"]
    factor_id: str
    subject: str
    approved_at: datetime


class RecoveryApproval(Answer, frozen=True, kw_only=True):
    """A recovery code was right and is used up."""

    status: Literal["approved"]
    factor_id: str
    recovery_codes_left: int
    approved_at: datetime


class RecoveryCodes(Answer, frozen=True, kw_only=True):
    """A new set of recovery codes (the old set stops working), shown this once."""

    recovery_codes: list[str]


class Factor(Answer, frozen=True, kw_only=True):
    """A subject's factor, without secrets."""

    factor_id: str
    type: Literal["totp"]
    status: Literal["pending", "active"]
    label: str
    created_at: datetime
    last_used_at: datetime | None
    recovery_codes_left: int


class FactorList(Answer, frozen=True, kw_only=True):
    """``GET /totp/factors``."""

    items: list[Factor]


class FactorRemoved(Answer, frozen=True, kw_only=True):
    """``DELETE /totp/factors/{id}``."""

    factor_id: str
    status: Literal["removed"]
