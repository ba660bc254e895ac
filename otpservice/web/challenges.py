"""POST /challenge, GET and DELETE /challenge/{id}, POST /verify: decode, call, encode."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, Response, delete, get, post
from litestar.params import FromPath, HeaderParameter, JSONBody

from otpservice.models import ChallengeRequest, ChallengeView, ceil_seconds, datetime_from_ms
from otpservice.web.context import caller, otp_service
from otpservice.web.problems import problem_responses
from otpservice.web.schemas import (
    ChallengeCreate,
    ChallengeCreated,
    ChallengeState,
    DeliveryState,
    VerifyApproved,
    VerifyRequest,
)

_OTP = {"scope": "otp"}
_OTP_JSON = {"scope": "otp", "json_body": True}


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
    opt=_OTP_JSON,
    status_code=201,
    summary="Send a one-time code",
    responses=problem_responses(400, 401, 403, 409, 415, 422, 429, 503),
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
    opt=_OTP_JSON,
    status_code=200,
    summary="Check a code",
    responses=problem_responses(400, 401, 403, 404, 410, 415, 429, 503),
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
    opt=_OTP,
    summary="Read a challenge",
    responses=problem_responses(401, 403, 404, 503),
)
async def read_challenge(
    challenge_id: FromPath[str],
    request: Request[Any, Any, Any],
) -> ChallengeState:
    """Status, attempts left, expiry and the masked number of a challenge."""
    return _state(await otp_service(request).get_challenge(challenge_id, client=caller(request)))


@delete(
    "/challenge/{challenge_id:str}",
    opt=_OTP,
    status_code=200,
    summary="Cancel a challenge",
    responses=problem_responses(401, 403, 404, 410, 503),
)
async def cancel_challenge(
    challenge_id: FromPath[str],
    request: Request[Any, Any, Any],
) -> ChallengeState:
    """Cancel a pending challenge: its code stops working at once."""
    return _state(await otp_service(request).cancel_challenge(challenge_id, client=caller(request)))


CHALLENGE_ROUTES = [create_challenge, verify_code, read_challenge, cancel_challenge]
