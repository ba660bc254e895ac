"""``every``: run a small job on a fixed period in the background until asked to stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

log = logging.getLogger("otpservice.periodic")  # a log field: kept as named before the move


async def every(seconds: float, stop: asyncio.Event, job: Callable[[], Awaitable[object]]) -> None:
    """Run ``job`` now, then every ``seconds`` until ``stop`` is set, and once more then (so
    what a job gathers in memory is written before the process ends). A job that fails is
    logged and tried again next time: a background task that dies quietly helps nobody."""
    while True:
        try:
            await job()
        except Exception:
            log.exception("background job %s failed; trying again later", job)
        if stop.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
