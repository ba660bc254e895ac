"""Operator routes for personal data (the ``admin`` scope): erase what is held about a number,
or about an API client's subject."""

from __future__ import annotations

from typing import Any

from litestar import Request, delete
from litestar.params import FromPath, FromQuery

from otpservice.phone import mask_numbers
from otpservice.usecases.privacy import Erasure, SubjectErasure
from otpservice.web.context import audit, caller, services
from otpservice.web.openapi import documented


@delete(
    "/personal-data/{phone:str}",
    status_code=200,
    summary="Erase a number's data",
    **documented("admin", "invalid_phone", "store_unavailable"),
)
async def erase_personal_data(phone: FromPath[str], request: Request[Any, Any, Any]) -> Erasure:
    """Erase everything held about ``phone`` (E.164) except its opt-out, which is kept."""
    personal_data = services(request).personal_data
    erasure = await personal_data.erase(phone)
    await audit(
        request,
        "admin.erase",
        phone=mask_numbers(phone),
        records=erasure.records_erased,
        events=erasure.events_erased,
    )
    return erasure


@delete(
    "/personal-data/subjects/{subject:str}",
    status_code=200,
    summary="Erase a subject's data",
    **documented("admin", "invalid_subject", "store_unavailable"),
)
async def erase_subject(
    subject: FromPath[str], request: Request[Any, Any, Any], client: FromQuery[str | None] = None
) -> SubjectErasure:
    """Erase an API client's subject (``client``, default the caller's): its authenticator-app
    factors, recovery codes, failure counters and the events naming it."""
    owner = client or caller(request)
    erasure = await services(request).personal_data.erase_subject(subject, client=owner)
    await audit(
        request,
        "admin.erase_subject",
        client=owner,
        records=erasure.records_erased,
        events=erasure.events_erased,
    )
    return erasure


PRIVACY_ROUTES = [erase_personal_data, erase_subject]
