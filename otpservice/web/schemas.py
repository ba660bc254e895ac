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
