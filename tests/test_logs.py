"""Logs of the running app: numbers masked, wherever the line comes from."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import pytest

from otpservice.app import create_app
from otpservice.logs import MaskNumbersFilter, configure_logging
from otpservice.settings import Settings
from otpservice.store import connect


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restore_logging")
async def test_app_keeps_the_masking_filter(
    make_settings: Callable[..., Settings], capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("info")
    settings = make_settings()
    client = connect(settings)
    create_app(settings, redis=client).state.otp.close()
    await client.aclose()
    handlers = logging.getLogger().handlers
    assert handlers
    assert all(any(isinstance(f, MaskNumbersFilter) for f in h.filters) for h in handlers)
    logging.getLogger("uvicorn.error").warning("request from %s failed", "+14155550123")
    err = capsys.readouterr().err
    assert "request from +*********23 failed" in err
    assert "4155550123" not in err
