"""Logs of the running app: numbers masked, wherever the line comes from."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator

import pytest

from otpservice.app import create_app
from otpservice.config.schema import Settings
from otpservice.logs import MaskingFormatter, configure_logging
from otpservice.store import connect
from tests.support.app import ApiFactory, Phone
from tests.support.helpers import issue_code, wrong


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
@pytest.mark.parametrize("log_format", ["json", "text"])
def test_exception_text_is_masked_and_addresses_are_left_alone(
    capsys: pytest.CaptureFixture[str], log_format: str
) -> None:
    configure_logging("info", log_format)
    try:
        raise ValueError("cannot send to +447911123456")
    except ValueError:
        logging.getLogger("otpservice").exception("send failed on 127.0.0.1:8080")
    err = capsys.readouterr().err
    assert "7911123456" not in err
    assert "+**********56" in err
    assert "127.0.0.1:8080" in err
    if log_format == "json":
        [line] = err.splitlines()
        record = json.loads(line)
        assert (record["level"], record["logger"]) == ("error", "otpservice")
        assert record["message"] == "send failed on 127.0.0.1:8080"
        assert "ValueError" in record["exception"]
        assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", record["time"])
    else:
        # The timestamp is left alone too.
        assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", err)


@pytest.mark.usefixtures("restore_logging")
async def test_each_line_carries_its_request_id(
    make_api: ApiFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    api = await make_api()
    configure_logging("info", "json")
    response = await api.post(
        "/challenge", json={"phone": "+14155550123"}, headers={"X-Request-ID": "req-1234"}
    )
    assert response.headers["x-request-id"] == "req-1234"
    generated = (await api.get("/healthz")).headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{16}", generated)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    issued = [r for r in lines if r["message"].startswith("challenge issued")]
    assert [r.get("request_id") for r in issued] == ["req-1234"]
    assert "4155550123" not in json.dumps(lines)


@pytest.mark.usefixtures("restore_logging")
async def test_issue_and_every_verification_outcome_leave_a_line_at_info(
    make_api: ApiFactory, phone: Phone, capsys: pytest.CaptureFixture[str]
) -> None:
    # The security checklist's trail: issue, verify success and failure, lock.
    api = await make_api(lockout={"max_failures": 2})
    configure_logging("info", "json")
    challenge_id, code = await issue_code(api, phone)
    body = {"challenge_id": challenge_id, "code": wrong(code)}
    assert (await api.post("/verify", json=body)).status_code == 400
    body["code"] = code
    assert (await api.post("/verify", json=body)).status_code == 200
    locked_id, locked_code = await issue_code(api, phone, "+14155550124")
    for _ in range(2):
        await api.post("/verify", json={"challenge_id": locked_id, "code": wrong(locked_code)})
    messages = [json.loads(line)["message"] for line in capsys.readouterr().err.splitlines()]
    assert any(m.startswith("challenge issued: " + challenge_id) for m in messages)
    assert f"challenge {challenge_id} failed: incorrect_code" in messages
    assert f"challenge approved: {challenge_id}" in messages
    assert any(m.startswith(f"challenge {locked_id} failed; number locked") for m in messages)
