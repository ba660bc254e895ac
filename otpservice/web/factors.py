"""The authenticator-app routes (``/totp/...``): decode, call, encode.

Answers that carry a secret (the enrolment's URI and QR code, recovery codes) are sent with
``Cache-Control: no-store`` and take no ``Idempotency-Key``: nothing keeps them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from litestar import Request, Response, delete, get, post
from litestar.params import FromPath, FromQuery, JSONBody

from otpservice.errors import FactorNotFound, Forbidden
from otpservice.models import datetime_from_ms
from otpservice.web.context import audit, caller, services
from otpservice.web.openapi import documented
from otpservice.web.schemas import (
    FactorActivate,
    FactorActivated,
    FactorCreate,
    FactorEnrolled,
    FactorItem,
    FactorList,
    FactorRemoved,
    RecoveryApproved,
    RecoveryCodes,
    RecoveryUse,
    TotpApproved,
    TotpVerify,
)

if TYPE_CHECKING:
    from otpservice.web.guards import ApiClient

_NO_STORE = {"Cache-Control": "no-store"}


def _api_client(request: Request[Any, Any, Any]) -> ApiClient:
    client: ApiClient = request.state.api_client
    return client


@post(
    "/totp/factors",
    status_code=201,
    summary="Enrol an authenticator app",
    **documented(
        "otp",
        "invalid_subject",
        "invalid_label",
        "rate_limited",
        "totp_not_configured",
        "store_unavailable",
        json_body=True,
    ),
)
async def enrol_factor(
    data: JSONBody[FactorCreate], request: Request[Any, Any, Any]
) -> Response[FactorEnrolled]:
    """A pending factor for the subject (replacing its pending one): the URI and QR code the
    user scans, shown this once."""
    enrolment = await services(request).totp.enrol(data.subject, data.label, client=caller(request))
    body = FactorEnrolled(
        factor_id=enrolment.factor_id,
        otpauth_uri=enrolment.otpauth_uri,
        qr_svg=enrolment.qr_svg,
        expires_at=datetime_from_ms(enrolment.expires_at_ms),
    )
    return Response(body, status_code=201, headers=_NO_STORE)


@post(
    "/totp/factors/{factor_id:str}/activate",
    status_code=200,
    summary="Activate a factor with its first code",
    **documented(
        "otp",
        "invalid_code_format",
        "incorrect_code",
        "code_already_used",
        "subject_locked",
        "factor_not_found",
        "factor_exists",
        "factor_expired",
        "totp_not_configured",
        "store_unavailable",
        "hashing_busy",
        json_body=True,
    ),
)
async def activate_factor(
    factor_id: FromPath[str], data: JSONBody[FactorActivate], request: Request[Any, Any, Any]
) -> Response[FactorActivated]:
    """Make the pending factor active and answer its recovery codes, once. While the subject
    has an active factor, ``current_code`` (a code of it) must come along: the swap is atomic."""
    activation = await services(request).totp.activate(
        factor_id, data.code, client=caller(request), current_code=data.current_code
    )
    body = FactorActivated(factor_id=activation.factor_id, recovery_codes=activation.recovery_codes)
    return Response(body, status_code=200, headers=_NO_STORE)


@post(
    "/totp/verify",
    status_code=200,
    summary="Check an authenticator-app code",
    **documented(
        "otp",
        "invalid_subject",
        "invalid_code_format",
        "incorrect_code",
        "code_already_used",
        "subject_locked",
        "factor_not_found",
        "factor_expired",
        "totp_not_configured",
        "store_unavailable",
        json_body=True,
    ),
)
async def verify_totp(data: JSONBody[TotpVerify], request: Request[Any, Any, Any]) -> TotpApproved:
    """Approve the code if it is right and its step was not used before; any other outcome is
    a problem."""
    approval = await services(request).totp.verify(data.subject, data.code, client=caller(request))
    return TotpApproved(
        factor_id=approval.factor_id,
        subject=approval.subject,
        approved_at=datetime_from_ms(approval.approved_at_ms),
    )


@post(
    "/totp/recovery",
    status_code=200,
    summary="Use a recovery code",
    **documented(
        "otp",
        "invalid_subject",
        "invalid_code_format",
        "incorrect_code",
        "subject_locked",
        "factor_not_found",
        "totp_not_configured",
        "store_unavailable",
        "hashing_busy",
        json_body=True,
    ),
)
async def use_recovery_code(
    data: JSONBody[RecoveryUse], request: Request[Any, Any, Any]
) -> RecoveryApproved:
    """Approve the subject with one of its recovery codes, which is then used up (allowed
    while the subject is locked for wrong authenticator codes)."""
    approval = await services(request).totp.recover(data.subject, data.code, client=caller(request))
    return RecoveryApproved(
        factor_id=approval.factor_id,
        recovery_codes_left=approval.recovery_codes_left,
        approved_at=datetime_from_ms(approval.approved_at_ms),
    )


@post(
    "/totp/factors/{factor_id:str}/recovery-codes",
    status_code=200,
    summary="Make new recovery codes",
    **documented(
        "otp",
        "factor_not_found",
        "factor_expired",
        "totp_not_configured",
        "store_unavailable",
        "hashing_busy",
    ),
)
async def regenerate_recovery_codes(
    factor_id: FromPath[str], request: Request[Any, Any, Any]
) -> Response[RecoveryCodes]:
    """A new set of ten recovery codes for an active factor, shown this once; the old set
    stops working."""
    codes = await services(request).totp.regenerate_recovery_codes(
        factor_id, client=caller(request)
    )
    return Response(RecoveryCodes(recovery_codes=codes), status_code=200, headers=_NO_STORE)


@get(
    "/totp/factors",
    summary="List a subject's factors",
    **documented(
        "otp",
        "invalid_request",
        "invalid_subject",
        "totp_not_configured",
        "store_unavailable",
        admin_too=True,
    ),
)
async def list_factors(
    subject: FromQuery[str], request: Request[Any, Any, Any], client: FromQuery[str | None] = None
) -> FactorList:
    """The subject's factors (no secrets). With the ``admin`` scope, ``client`` names whose
    subject it is (default: the caller's)."""
    api_client = _api_client(request)
    if client is not None and client != api_client.name and "admin" not in api_client.scopes:
        raise Forbidden("naming another client needs the 'admin' scope")
    views = await services(request).totp.list_factors(subject, client=client or api_client.name)
    return FactorList(
        items=[
            FactorItem(
                factor_id=view.factor_id,
                status=view.status,
                label=view.label,
                created_at=datetime_from_ms(view.created_at_ms),
                last_used_at=(
                    datetime_from_ms(view.last_used_at_ms) if view.last_used_at_ms else None
                ),
                recovery_codes_left=view.recovery_codes_left,
            )
            for view in views
        ]
    )


@delete(
    "/totp/factors/{factor_id:str}",
    status_code=200,
    summary="Remove a factor",
    **documented(
        "otp", "factor_not_found", "totp_not_configured", "store_unavailable", admin_too=True
    ),
)
async def remove_factor(factor_id: FromPath[str], request: Request[Any, Any, Any]) -> FactorRemoved:
    """Remove a factor, active or pending: its codes and recovery codes stop working. With the
    ``admin`` scope, any client's factor (audited as ``admin.totp_remove``)."""
    api_client = _api_client(request)
    totp = services(request).totp
    if "otp" in api_client.scopes:
        try:
            await totp.remove(factor_id, client=api_client.name)
            return FactorRemoved(factor_id=factor_id)
        except FactorNotFound:
            if "admin" not in api_client.scopes:
                raise
    owner = await totp.remove(factor_id, client=None)
    await audit(request, "admin.totp_remove", factor_id=factor_id, client=owner)
    return FactorRemoved(factor_id=factor_id)


FACTOR_ROUTES = [
    enrol_factor,
    activate_factor,
    verify_totp,
    use_recovery_code,
    regenerate_recovery_codes,
    list_factors,
    remove_factor,
]
