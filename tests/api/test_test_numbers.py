"""Test numbers (``test_numbers``): a fixed code, no SMS, every other rule kept."""

from __future__ import annotations

import asyncio
import datetime
import logging
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from redis.asyncio import Redis

from otpservice.config.live import LiveSettings
from otpservice.errors import ConfigError
from otpservice.validation import load_settings
from tests.support.app import ApiFactory, Phone
from tests.support.helpers import assert_problem, wait_until_async

NUMBER = "+14155550142"
CODE = "424242"


def in_days(days: int) -> str:
    return (datetime.date.today() + datetime.timedelta(days=days)).isoformat()


def code_file(tmp_path: Path, code: str = CODE) -> str:
    path = tmp_path / "review-code"
    path.write_text(f"{code}\n")
    return str(path)


@pytest.mark.parametrize("given_as", ["code_file", "code_argon2"])
async def test_a_test_number_gets_no_sms_and_its_fixed_code_verifies(
    make_api: ApiFactory,
    phone: Phone,
    redis: Redis,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    given_as: str,
) -> None:
    caplog.set_level(logging.WARNING, logger="otpservice.otp")
    code = (
        {"code_file": code_file(tmp_path)}
        if given_as == "code_file"
        else {"code_argon2": PasswordHasher().hash(CODE)}
    )
    api = await make_api(
        test_numbers=[{"phone": NUMBER, "expires_on": in_days(30), **code}],
        unsafe={"allow_test_numbers": True},
    )
    created = await api.post("/challenge", json={"phone": NUMBER})
    assert created.status_code == 201, created.text
    challenge_id = created.json()["challenge_id"]
    assert await phone.sent() == []
    delivery = (await api.get(f"/challenge/{challenge_id}")).json()["delivery"]
    assert (delivery["status"], delivery["provider"]) == ("sent", "test_number")
    # The attempt budget applies: a wrong code costs an attempt.
    wrong = await api.post("/verify", json={"challenge_id": challenge_id, "code": "000000"})
    assert assert_problem(wrong, 400, "incorrect_code")["attempts_left"] == 4
    right = await api.post("/verify", json={"challenge_id": challenge_id, "code": CODE})
    assert right.status_code == 200, right.text
    # The per-number limits apply too.
    again = await api.post("/challenge", json={"phone": NUMBER})
    assert assert_problem(again, 429, "rate_limited")["rule"] == "number_min_interval"
    warned = [r.getMessage() for r in caplog.records if "test number" in r.getMessage()]
    assert len(warned) == 1
    assert NUMBER not in warned[0]
    assert "+1********42" in warned[0]
    audited = [f for _, f in await redis.xrange("otp:{audit}:stream")]
    assert [f[b"kind"] for f in audited if f[b"kind"] == b"test_number.used"] == [
        b"test_number.used"
    ]
    assert NUMBER.encode() not in b"".join(v for f in audited for v in f.values())
    assert CODE.encode() not in b"".join(v for f in audited for v in f.values())


async def test_the_fraud_guard_ignores_test_numbers_and_analytics_name_them(
    make_api: ApiFactory, tmp_path: Path
) -> None:
    review = "+447400123499"
    api = await make_api(
        abuse={"rules": [], "fraud_guard": {"min_sent": 3, "floor": 0.5}},
        test_numbers=entries(tmp_path, phone=review),
        unsafe={"allow_test_numbers": True},
    )
    for number in ("+447400123401", "+447400123402", "+447400123403"):
        assert (await api.post("/challenge", json={"phone": number})).status_code == 201
    state = await wait_until_async(
        lambda: fraud_state(api), lambda state: bool(state["tripped"]), within_s=5
    )
    assert state["sent"] == 3
    refused = await api.post("/challenge", json={"phone": "+447400123404"})
    assert_problem(refused, 429, "suspected_fraud")
    # The tripped prefix does not refuse the test number, and its code is not counted.
    created = await api.post("/challenge", json={"phone": review})
    assert created.status_code == 201, created.text
    verified = await api.post(
        "/verify", json={"challenge_id": created.json()["challenge_id"], "code": CODE}
    )
    assert verified.status_code == 200
    await asyncio.sleep(0.7)  # past a flush of the counts
    state = await fraud_state(api)
    assert (state["sent"], state["verified"]) == (3, 0)
    services = api._transport.app.state.services  # type: ignore[attr-defined]
    await services.analytics.flush()
    report = (await api.get("/analytics", params={"group_by": "provider"})).json()
    sent = {group["key"]: group["sent"] for group in report["groups"]}
    assert sent["test_number"] == 1


async def fraud_state(api: Any) -> dict[str, Any]:
    state: dict[str, Any] = (await api.get("/fraud-guard/+4474")).json()
    return state


def entries(tmp_path: Path, *extra: dict[str, Any], **first: Any) -> list[dict[str, Any]]:
    entry = {"phone": NUMBER, "expires_on": in_days(10), "code_file": code_file(tmp_path)}
    return [{**entry, **first}, *extra]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"expires_on": in_days(-1)}, r"test_numbers\[0\]\.expires_on: .* has passed"),
        ({"expires_on": in_days(91)}, r"test_numbers\[0\]\.expires_on: at most 90 days"),
        ({"code_argon2": "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA"}, r"not both"),
        ({"code_file": None}, r"code_file or code_argon2"),
        ({"code_file": None, "code_argon2": "$2b$12$notargon"}, r"not an argon2id PHC"),
        ({"phone": "+1415"}, r"test_numbers\[0\]\.phone"),
    ],
)
def test_a_bad_or_expired_entry_is_refused_naming_it(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(environ={}, dev=True, overrides={"test_numbers": entries(tmp_path, **change)})


def test_a_code_of_another_length_and_too_many_entries_are_refused(tmp_path: Path) -> None:
    short = [{"phone": NUMBER, "expires_on": in_days(5), "code_file": code_file(tmp_path, "123")}]
    with pytest.raises(ConfigError, match=r"code_file: the code must be 6 digits"):
        load_settings(environ={}, dev=True, overrides={"test_numbers": short})
    many = [
        {"phone": f"+1415555{1000 + n}", "expires_on": in_days(5), "code_file": code_file(tmp_path)}
        for n in range(21)
    ]
    with pytest.raises(ConfigError, match="test_numbers"):
        load_settings(environ={}, dev=True, overrides={"test_numbers": many})


def test_outside_dev_test_numbers_need_an_acknowledgement(
    make_settings: Any, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=r"unsafe\.allow_test_numbers"):
        make_settings(test_numbers=entries(tmp_path))
    settings = make_settings(test_numbers=entries(tmp_path), unsafe={"allow_test_numbers": True})
    assert settings.test_numbers[0].phone == NUMBER


def test_a_reload_with_an_expired_test_number_is_refused(tmp_path: Path) -> None:
    code = code_file(tmp_path)

    def write(expires_on: str) -> Path:
        config = tmp_path / "otp.toml"
        config.write_text(
            f'[[test_numbers]]\nphone = "{NUMBER}"\nexpires_on = {expires_on}\n'
            f'code_file = "{code}"\n'
        )
        return config

    config = write(in_days(3))
    live = LiveSettings(load_settings(config, environ={}, dev=True), load=load_settings)
    write(in_days(-1))
    assert live.reload() is False
    assert live.current.test_numbers[0].expires_on.isoformat() == in_days(3)
