"""Logs of the running app: numbers masked, wherever the line comes from."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator

import pytest

from otpservice.app import create_app
from otpservice.logs import MaskingFormatter, configure_logging
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
async def test_app_keeps_the_masking_formatter(
    make_settings: Callable[..., Settings], capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("info")
    settings = make_settings()
    client = connect(settings)
    await create_app(settings, redis=client).state.runtime.stop()
    await client.aclose()
    handlers = logging.getLogger().handlers
    assert handlers
    assert all(isinstance(h.formatter, MaskingFormatter) for h in handlers)
    logging.getLogger("uvicorn.error").warning("request from %s failed", "+14155550123")
    err = capsys.readouterr().err
    assert "request from +*********23 failed" in err
    assert "4155550123" not in err


@pytest.mark.usefixtures("restore_logging")
def test_exception_text_is_masked_and_addresses_are_left_alone(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("info")
    try:
        raise ValueError("cannot send to +447911123456")
    except ValueError:
        logging.getLogger("otpservice").exception("send failed on 127.0.0.1:8080")
    err = capsys.readouterr().err
    assert "7911123456" not in err
    assert "+**********56" in err
    assert "127.0.0.1:8080" in err
    # The timestamp is left alone too.
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", err)
