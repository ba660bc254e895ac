"""POST /challenge, GET and DELETE /challenge/{id}, POST /verify: decode, call, encode."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, Response, delete, get, post
from litestar.params import FromPath, HeaderParameter, JSONBody

from otpservice.models import ChallengeRequest, ChallengeView, ceil_seconds, datetime_from_ms
from otpservice.web.context import caller, otp_service
from otpservice.web.openapi import documented
from otpservice.web.schemas import (
    ChallengeCreate,
    ChallengeCreated,
    ChallengeState,
    DeliveryState,
    VerifyApproved,
    VerifyRequest,
)


def _state(view: ChallengeView) -> ChallengeState:
    delivery = view.delivery
    return ChallengeState(
        challenge_id=view.challenge_id,
        status=view.status,
        attempts_left=view.attempts_left,
        created_at=datetime_from_ms(view.created_at_ms),
        expires_at=datetime_from_ms(view.expires_at_ms),
        phone=view.masked_phone,
        purpose=view.purpose,
        delivery=DeliveryState(
            status=delivery.status,
            provider=delivery.provider,
            message_id=delivery.message_id,
            detail=delivery.detail,
            updated_at=datetime_from_ms(delivery.updated_at_ms) if delivery.updated_at_ms else None,
            sent_at=datetime_from_ms(delivery.sent_at_ms) if delivery.sent_at_ms else None,
        ),
    )


@post(
    "/challenge",
    status_code=201,
    summary="Send a one-time code",
    **documented(
        "otp",
        "invalid_phone",
        "invalid_client_ip",
        "recipient_opted_out",
        "destination_not_allowed",
        "idempotency_key_in_use",
        "idempotency_key_reused",
        "rate_limited",
        "suspected_fraud",
        "number_locked",
        "store_unavailable",
        "hashing_busy",
        json_body=True,
    ),
)
async def create_challenge(
    data: JSONBody[ChallengeCreate],
    request: Request[Any, Any, Any],
    idempotency_key: Annotated[
        str | None,
        HeaderParameter(
            name="Idempotency-Key",
            min_length=1,
            max_length=255,
            description="Retrying with the same key returns the same challenge; kept 24 h.",
        ),
    ] = None,
) -> Response[ChallengeCreated]:
    """Issue a challenge for a phone number and hand its code to the SMS sender."""
    issued, replayed = await otp_service(request).issue_challenge(
        ChallengeRequest(
            phone=data.phone, purpose=data.purpose, locale=data.locale, client_ip=data.client_ip
        ),
        client=caller(request),
        idempotency_key=idempotency_key,
    )
    body = ChallengeCreated(
        challenge_id=issued.challenge_id,
        status=issued.status,
        expires_at=datetime_from_ms(issued.expires_at_ms),
        attempts_left=issued.attempts_left,
        resend_after=ceil_seconds(issued.resend_after_ms),
    )
    headers = {"Idempotent-Replayed": "true"} if replayed else {}
    return Response(body, status_code=201, headers=headers)


@post(
    "/verify",
    status_code=200,
    summary="Check a code",
    **documented(
        "otp",
        "invalid_code_format",
        "incorrect_code",
        "challenge_not_found",
        "challenge_expired",
        "challenge_used",
        "too_many_attempts",
        "number_locked",
        "store_unavailable",
        "hashing_busy",
        json_body=True,
    ),
)
async def verify_code(
    data: JSONBody[VerifyRequest],
    request: Request[Any, Any, Any],
) -> VerifyApproved:
    """Approve the challenge if the code is right; any other outcome is a problem."""
    approved = await otp_service(request).verify_challenge(
        data.challenge_id, data.code, client=caller(request)
    )
    return VerifyApproved(
        challenge_id=approved.challenge_id, approved_at=datetime_from_ms(approved.approved_at_ms)
    )


@get(
    "/challenge/{challenge_id:str}",
    summary="Read a challenge",
    **documented("otp", "challenge_not_found", "store_unavailable"),
)
async def read_challenge(
    challenge_id: FromPath[str],
    request: Request[Any, Any, Any],
) -> ChallengeState:
    """Status, attempts left, expiry and the masked number of a challenge."""
    return _state(await otp_service(request).get_challenge(challenge_id, client=caller(request)))


@delete(
    "/challenge/{challenge_id:str}",
    status_code=200,
    summary="Cancel a challenge",
    **documented(
        "otp", "challenge_not_found", "challenge_expired", "challenge_used", "store_unavailable"
    ),
)
async def cancel_challenge(
    challenge_id: FromPath[str],
    request: Request[Any, Any, Any],
) -> ChallengeState:
    """Cancel a pending challenge: its code stops working at once."""
    return _state(await otp_service(request).cancel_challenge(challenge_id, client=caller(request)))


CHALLENGE_ROUTES = [create_challenge, verify_code, read_challenge, cancel_challenge]
