"""Operator routes for opt-outs (the ``admin`` scope): list them, read, add, remove one."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from litestar import Request, delete, get, put
from litestar.params import FromPath, Parameter

from otpservice.models import datetime_from_ms
from otpservice.phone import mask_numbers
from otpservice.web.context import audit, services
from otpservice.web.openapi import documented

if TYPE_CHECKING:
    from otpservice.models import OptOut
    from otpservice.usecases.optouts import OptOuts


class OptOutState(msgspec.Struct, frozen=True, kw_only=True):
    """Whether a number is opted out, since when and why."""

    phone: str
    opted_out: bool
    since: datetime | None = None
    source: Annotated[str | None, msgspec.Meta(description="keyword, admin or provider_error")] = (
        None
    )
    detail: str | None = None


class OptOutHistoryEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One change of a number's opt-out."""

    at: datetime
    opted_out: bool
    source: str
    sender: str | None = None


class OptOutRecord(OptOutState, frozen=True, kw_only=True):
    """A number's opt-out state and every change to it, newest first."""

    history: list[OptOutHistoryEntry]


class OptOutPage(msgspec.Struct, frozen=True, kw_only=True):
    """One page of opt-outs, in no particular order (stable from page to page)."""

    items: list[OptOutState]
    next: Annotated[
        str | None,
        msgspec.Meta(
            description="an opaque cursor: pass as `after` for the next page; null on the last"
        ),
    ]


def _optouts(request: Request[Any, Any, Any]) -> OptOuts:
    optouts = services(request).optouts
    return optouts


def _state(phone: str, record: OptOut | None) -> OptOutState:
    if record is None:
        return OptOutState(phone=phone, opted_out=False)
    return OptOutState(
        phone=record.phone,
        opted_out=True,
        since=datetime_from_ms(record.since_ms),
        source=record.source,
        detail=record.detail or None,
    )


@get(
    "/opt-outs",
    summary="List opt-outs",
    **documented("admin", "invalid_request", "store_unavailable"),
)
async def list_opt_outs(
    request: Request[Any, Any, Any],
    after: Annotated[str, Parameter(description="the `next` of the previous page")] = "",
    limit: Annotated[int, Parameter(ge=1, le=1000)] = 100,
) -> OptOutPage:
    """Every opted-out number, a page at a time, in no particular order."""
    records, following = await _optouts(request).page(after, limit)
    return OptOutPage(items=[_state(r.phone, r) for r in records], next=following)


@get(
    "/opt-outs/{phone:str}",
    summary="Read a number's opt-out",
    **documented("admin", "invalid_phone", "store_unavailable"),
)
async def read_opt_out(phone: FromPath[str], request: Request[Any, Any, Any]) -> OptOutRecord:
    """Whether ``phone`` (E.164) is opted out, and the history of its opt-outs and opt-ins."""
    optouts = _optouts(request)
    state = _state(phone, await optouts.get(phone))
    history = [
        OptOutHistoryEntry(
            at=datetime_from_ms(c.at_ms),
            opted_out=c.opted_out,
            source=c.source,
            sender=c.sender or None,
        )
        for c in await optouts.history(phone)
    ]
    return OptOutRecord(**msgspec.structs.asdict(state), history=history)


@put(
    "/opt-outs/{phone:str}",
    summary="Opt a number out",
    **documented("admin", "invalid_phone", "store_unavailable"),
)
async def add_opt_out(phone: FromPath[str], request: Request[Any, Any, Any]) -> OptOutState:
    """Opt ``phone`` out (source ``admin``); an existing opt-out is kept as it was."""
    done = await _optouts(request).opt_out(phone, source="admin")
    state = _state(phone, done.record)
    await audit(request, "admin.opt_out", phone=mask_numbers(phone))
    return state


@delete(
    "/opt-outs/{phone:str}",
    status_code=200,
    summary="Opt a number back in",
    **documented("admin", "invalid_phone", "store_unavailable"),
)
async def remove_opt_out(phone: FromPath[str], request: Request[Any, Any, Any]) -> OptOutState:
    """Remove ``phone``'s opt-out."""
    await _optouts(request).opt_in(phone, source="admin")
    await audit(request, "admin.opt_in", phone=mask_numbers(phone))
    return _state(phone, None)


OPT_OUT_ROUTES = [list_opt_outs, read_opt_out, add_opt_out, remove_opt_out]
