"""Wire Structs: request and response bodies. Their constraints feed the OpenAPI spec."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from otpservice.models import ChallengeStatus, DeliveryStatus


class Wire(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of the wire Structs: unknown fields are refused, not ignored."""


# msgspec checks patterns with re.search, where "$" also matches before a final newline;
# "(?![\s\S])" is the end of the text in both Python and ECMAScript (OpenAPI) regexes.
END_OF_TEXT = r"(?![\s\S])"

ChallengeId = Annotated[
    str,
    Meta(
        max_length=64,
        description="Opaque id of a challenge, as returned by POST /challenge.",
        examples=["A8omNElmyVSmi0Gd.XgjgHSgeutOUeu_wJr4-_w"],
    ),
]


class ChallengeCreate(Wire, frozen=True, kw_only=True):
    """Ask for a code to be sent."""

    phone: Annotated[
        str,
        Meta(
            max_length=16,
            description="The recipient in E.164 form: '+', country code, number.",
            examples=["+14155550123"],
        ),
    ]
    purpose: Annotated[
        str,
        Meta(
            pattern=r"^[a-z0-9_.-]{1,32}" + END_OF_TEXT,
            description="What the code is for, such as 'login'.",
        ),
    ] = "login"
    locale: (
        Annotated[
            str,
            Meta(
                pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*" + END_OF_TEXT,
                description="BCP 47 language of the message, such as 'en' or 'pt-BR'.",
            ),
        ]
        | None
    ) = None
    client_ip: (
        Annotated[str, Meta(max_length=45, description="IP address of the end user.")] | None
    ) = None


class ChallengeCreated(Wire, frozen=True, kw_only=True):
    """A challenge was created and its code handed to the SMS sender."""

    challenge_id: ChallengeId
    status: Annotated[
        ChallengeStatus,
        Meta(description="'pending' when created; a replay shows the challenge's status now."),
    ]
    expires_at: datetime
    attempts_left: int
    resend_after: Annotated[
        int, Meta(ge=0, description="Seconds until another code may be sent to this number.")
    ]


class VerifyRequest(Wire, frozen=True, kw_only=True):
    """A code the end user typed."""

    challenge_id: ChallengeId
    # Checked by the service (invalid_code_format), not here, so every bad code gets that answer.
    code: Annotated[str, Meta(max_length=256, examples=["123456"])]


class VerifyApproved(Wire, frozen=True, kw_only=True):
    """The code was right: the challenge is approved, and can never be approved again."""

    challenge_id: ChallengeId
    status: Literal["approved"] = "approved"
    approved_at: datetime


class DeliveryState(Wire, frozen=True, kw_only=True):
    """Where the challenge's SMS stands. It only moves forward: queued, then sending or
    retrying, then sent or unknown (a provider may have taken it), then delivered, undelivered
    or failed."""

    status: DeliveryStatus
    provider: str | None = None
    message_id: Annotated[str | None, Meta(description="The provider's id of the message.")] = None
    detail: Annotated[str | None, Meta(description="Why it failed, or is being retried.")] = None
    updated_at: datetime | None = None
    sent_at: datetime | None = None


class ChallengeState(Wire, frozen=True, kw_only=True):
    """Where a challenge stands."""

    challenge_id: ChallengeId
    status: ChallengeStatus
    attempts_left: int
    created_at: datetime
    expires_at: datetime
    phone: Annotated[str, Meta(description="The recipient, masked.", examples=["+1********23"])]
    purpose: str
    delivery: DeliveryState


class Health(Wire, frozen=True, kw_only=True):
    """Health probe answer."""

    status: Literal["ok"] = "ok"


class Problem(Wire, frozen=True, kw_only=True, omit_defaults=True):
    """An RFC 9457 problem; ``code`` is stable and meant for programs."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    code: Annotated[str, Meta(examples=["incorrect_code"])]
    instance: str | None = None
    attempts_left: int | None = None
    rule: str | None = None
    retry_after: int | None = None


FactorId = Annotated[
    str,
    Meta(
        max_length=64,
        description="Opaque id of an authenticator-app factor, as returned by POST /totp/factors.",
        examples=["mn2_ypvikwtW_ywwim-bFw._wmH80iVwAX9Qi7aG7O42Q"],
    ),
]
# Checked by the service (invalid_subject, invalid_code_format), not here, so every bad value
# gets its own problem code.
Subject = Annotated[
    str,
    Meta(
        max_length=256,
        description="The app's own id of the user: printable ASCII without spaces, 1 to 128 "
        "characters. Never a phone number or an email address.",
        examples=["user-4821"],
    ),
]
TotpCode = Annotated[str, Meta(max_length=256, examples=["492039"])]


class FactorCreate(Wire, frozen=True, kw_only=True):
    """Enrol an authenticator app for a subject."""

    subject: Subject
    label: Annotated[
        str,
        Meta(
            max_length=256,
            description="What the authenticator app shows beside the issuer, usually the "
            "user's email: 1 to 64 printable characters without ':'. Sealed at rest.",
            examples=["alice@example.com"],
        ),
    ]


class FactorEnrolled(Wire, frozen=True, kw_only=True):
    """A pending factor. ``otpauth_uri`` and ``qr_svg`` hold its secret and are shown this
    once: nothing stores this answer; enrol again if it is lost."""

    factor_id: FactorId
    type: Literal["totp"] = "totp"
    status: Literal["pending"] = "pending"
    otpauth_uri: Annotated[str, Meta(description="Google's Key Uri Format, for the QR code.")]
    qr_svg: Annotated[str, Meta(description="A standalone SVG image of the QR code.")]
    expires_at: datetime


class FactorActivate(Wire, frozen=True, kw_only=True):
    """The first code of the new factor; ``current_code``, a code of the subject's active
    factor, when this one replaces it."""

    code: TotpCode
    current_code: TotpCode | None = None


class FactorActivated(Wire, frozen=True, kw_only=True):
    """The factor is active. The recovery codes are shown this once."""

    factor_id: FactorId
    status: Literal["active"] = "active"
    recovery_codes: Annotated[
        list[str], Meta(description="Ten codes, N-XXXXX-XXXXX, each usable once.")
    ]


class TotpVerify(Wire, frozen=True, kw_only=True):
    """A code from the subject's authenticator app."""

    subject: Subject
    code: TotpCode


class TotpApproved(Wire, frozen=True, kw_only=True):
    """The code was right and its step had not been used: it can never be used again."""

    status: Literal["approved"] = "approved"
    factor_id: FactorId
    subject: str
    approved_at: datetime


class RecoveryUse(Wire, frozen=True, kw_only=True):
    """A recovery code the user typed (case, spaces and dashes do not matter)."""

    subject: Subject
    code: Annotated[str, Meta(max_length=256, examples=["3-K7Q2M-9XW4P"])]


class RecoveryApproved(Wire, frozen=True, kw_only=True):
    """The recovery code was right; it is used up. Offer new ones when few are left."""

    status: Literal["approved"] = "approved"
    factor_id: FactorId
    recovery_codes_left: int
    approved_at: datetime


class RecoveryCodes(Wire, frozen=True, kw_only=True):
    """A new set of recovery codes, shown this once; the old set no longer works."""

    recovery_codes: list[str]


class FactorItem(Wire, frozen=True, kw_only=True):
    """A subject's factor."""

    factor_id: FactorId
    type: Literal["totp"] = "totp"
    status: Literal["pending", "active"]
    label: str
    created_at: datetime
    last_used_at: datetime | None
    recovery_codes_left: int


class FactorList(Wire, frozen=True, kw_only=True):
    """A subject's factors: at most one active and one pending."""

    items: list[FactorItem]


class FactorRemoved(Wire, frozen=True, kw_only=True):
    """The factor is gone: its codes and recovery codes no longer work."""

    factor_id: FactorId
    status: Literal["removed"] = "removed"
