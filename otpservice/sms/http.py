"""One POST to a provider, with transport errors and statuses sorted into the three failures.

Shared by every HTTP provider, so they all draw the line between "certainly not sent" and
"perhaps sent" in the same place.
"""

from __future__ import annotations

import email.utils
import time
from typing import TYPE_CHECKING

import httpx

from otpservice.sms.outcomes import NotAccepted, OutcomeUnknown, Rejected, SendFailure

# A provider's Retry-After is believed up to this (a code lives minutes, not days).
MAX_RETRY_AFTER_SECONDS = 3600.0

if TYPE_CHECKING:
    from collections.abc import Callable


async def post(
    client: httpx.AsyncClient,
    provider: str,
    url: str,
    *,
    content: bytes,
    headers: dict[str, str],
    time_limit: float,
    auth: httpx.BasicAuth | None = None,
    refusal: Callable[[httpx.Response], SendFailure] | None = None,
) -> httpx.Response:
    """POST ``content``; return a 2xx response, raise ``SendFailure`` for anything else.

    Other 4xx answers than 401, 403, 408 and 429 are ``Rejected``, unless ``refusal`` reads
    the provider's error body and says otherwise.
    """
    try:
        response = await client.post(
            url,
            content=content,
            headers=headers,
            auth=auth or httpx.USE_CLIENT_DEFAULT,
            timeout=time_limit,
        )
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        # Nothing reached the provider.
        raise NotAccepted(provider, "unreachable", type(exc).__name__) from exc
    except httpx.HTTPError as exc:
        # Sent, perhaps whole: a read timeout, a dropped connection, an undecodable answer.
        raise OutcomeUnknown(provider, "no_answer", type(exc).__name__) from exc
    status = response.status_code
    if status < 300:
        return response
    detail = f"HTTP {status}"
    if status == 429 or status >= 500 or status == 408:
        raise NotAccepted(provider, "busy", detail, retry_after(response))
    if status in (401, 403):
        raise NotAccepted(provider, "credentials_refused", detail)
    if refusal is not None:
        raise refusal(response)
    raise Rejected(provider, "refused", detail)


def retry_after(response: httpx.Response) -> float | None:
    """The ``Retry-After`` header in seconds (delta or HTTP date), or None."""
    value = (response.headers.get("retry-after") or "").strip()
    if not value:
        return None
    if value.isascii() and value.isdigit():
        return min(float(value), MAX_RETRY_AFTER_SECONDS)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return min(max(0.0, when.timestamp() - time.time()), MAX_RETRY_AFTER_SECONDS)
