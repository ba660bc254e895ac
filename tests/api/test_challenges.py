"""The HTTP contract of /challenge and /verify, on a real Redis."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.support.app import ApiFactory, Phone
from tests.support.helpers import PHONE, assert_problem, issue, issue_code, wrong

Client = httpx.AsyncClient


async def test_issue_then_verify_walkthrough(api: Client, phone: Phone) -> None:
    created = await issue(api, purpose="login", locale="en", client_ip="203.0.113.7")
    assert created["status"] == "pending"
    assert created["attempts_left"] == 5
    assert created["resend_after"] == 30
    expires = datetime.fromisoformat(created["expires_at"])
    assert 295 <= (expires - datetime.now(expires.tzinfo)).total_seconds() <= 301

    [(number, challenge_id, code)] = await phone.sent()
    assert (number, challenge_id) == (PHONE, created["challenge_id"])
    assert len(code) == 6

    response = await api.post("/verify", json={"challenge_id": challenge_id, "code": code})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "approved"

    state = (await api.get(f"/challenge/{challenge_id}")).json()
    assert state["status"] == "approved"
    assert state["phone"] == "+1********23"


async def test_wrong_code_then_budget_spent_then_right_code_refused(
    api: Client, phone: Phone
) -> None:
    challenge_id, code = await issue_code(api, phone)
    for left in (4, 3, 2, 1):
        body = assert_problem(
            await api.post("/verify", json={"challenge_id": challenge_id, "code": wrong(code)}),
            400,
            "incorrect_code",
        )
        assert body["attempts_left"] == left
    assert_problem(
        await api.post("/verify", json={"challenge_id": challenge_id, "code": wrong(code)}),
        429,
        "too_many_attempts",
    )
    # The challenge is dead: even the right code no longer works.
    assert_problem(
        await api.post("/verify", json={"challenge_id": challenge_id, "code": code}),
        429,
        "too_many_attempts",
    )
    state = (await api.get(f"/challenge/{challenge_id}")).json()
    assert (state["status"], state["attempts_left"]) == ("too_many_attempts", 0)


async def test_used_challenge_answers_410_challenge_used(api: Client, phone: Phone) -> None:
    challenge_id, code = await issue_code(api, phone)
    assert (
        await api.post("/verify", json={"challenge_id": challenge_id, "code": code})
    ).status_code == 200
    assert_problem(
        await api.post("/verify", json={"challenge_id": challenge_id, "code": code}),
        410,
        "challenge_used",
    )


async def test_expired_challenge_is_410_then_404_after_its_tombstone(
    make_api: ApiFactory, phone: Phone
) -> None:
    api = await make_api(code={"ttl_seconds": 1, "tombstone_seconds": 1})
    challenge_id, code = await issue_code(api, phone)
    await asyncio.sleep(1.1)
    assert_problem(
        await api.post("/verify", json={"challenge_id": challenge_id, "code": code}),
        410,
        "challenge_expired",
    )
    assert (await api.get(f"/challenge/{challenge_id}")).json()["status"] == "expired"
    await asyncio.sleep(1.0)
    assert_problem(
        await api.post("/verify", json={"challenge_id": challenge_id, "code": code}),
        404,
        "challenge_not_found",
    )


async def test_unknown_and_malformed_ids_are_404(api: Client) -> None:
    real = (await issue(api))["challenge_id"]
    tag, _ = real.split(".")
    for challenge_id in (f"{tag}.AAAAAAAAAAAAAAAAAAAAAA", "nonsense", "x" * 64):
        assert_problem(
            await api.post("/verify", json={"challenge_id": challenge_id, "code": "123456"}),
            404,
            "challenge_not_found",
        )
        assert_problem(await api.get(f"/challenge/{challenge_id}"), 404, "challenge_not_found")


async def test_cancel_stops_the_code(api: Client, phone: Phone) -> None:
    challenge_id, code = await issue_code(api, phone)
    response = await api.delete(f"/challenge/{challenge_id}")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert_problem(
        await api.post("/verify", json={"challenge_id": challenge_id, "code": code}),
        410,
        "challenge_expired",
    )


async def test_new_challenge_replaces_the_pending_one(make_api: ApiFactory, phone: Phone) -> None:
    api = await make_api(send_limits={"min_interval_seconds": 0})
    first = (await issue(api))["challenge_id"]
    first_code = await phone.code_for(first)  # it reached the phone before the new one
    second = (await issue(api))["challenge_id"]
    assert (await api.get(f"/challenge/{first}")).json()["status"] == "cancelled"
    assert_problem(
        await api.post("/verify", json={"challenge_id": first, "code": first_code}),
        410,
        "challenge_expired",
    )
    response = await api.post(
        "/verify", json={"challenge_id": second, "code": await phone.code_for(second)}
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    "code",
    ["12345", "1234567", "12345a", "١٢٣٤٥٦", " 123456", "", "1234567890" * 3],
)
async def test_malformed_code_costs_no_attempt(api: Client, code: str) -> None:
    challenge_id = (await issue(api))["challenge_id"]
    assert_problem(
        await api.post("/verify", json={"challenge_id": challenge_id, "code": code}),
        400,
        "invalid_code_format",
    )
    assert (await api.get(f"/challenge/{challenge_id}")).json()["attempts_left"] == 5


@pytest.mark.parametrize(
    ("first", "spelling"),
    [
        ("wrong", '"code"'),
        ("wrong", '"c\\u006fde"'),
        # Python's json refuses integers over 4300 digits where msgspec reads them: the check
        # must not wave such a body through to a decoder that keeps the last "code".
        ("7" * 5000, '"code"'),
    ],
    ids=["plain", "escaped", "long-number"],
)
async def test_a_key_twice_is_refused_before_it_is_decoded(
    api: Client, phone: Phone, first: str, spelling: str
) -> None:
    # The decoder keeps the last key; a gateway or a log reading the first would see a wrong
    # code, while the right one was judged (or the other way round).
    challenge_id, code = await issue_code(api, phone)
    first_value = f'"{wrong(code)}"' if first == "wrong" else first
    body = f'{{"challenge_id": "{challenge_id}", "code": {first_value}, {spelling}: "{code}"}}'
    twice = await api.post("/verify", content=body, headers={"Content-Type": "application/json"})
    problem = assert_problem(twice, 400, "invalid_request")
    assert "'code' appears twice" in problem["detail"]
    state = (await api.get(f"/challenge/{challenge_id}")).json()
    assert (state["status"], state["attempts_left"]) == ("pending", 5)
    ok = await api.post("/verify", json={"challenge_id": challenge_id, "code": code})
    assert ok.status_code == 200


async def test_a_key_twice_is_refused_at_any_depth(api: Client, phone: Phone) -> None:
    body = f'{{"phone": "{PHONE}", "meta": {{"a": [{{"b": 1, "b": 2}}]}}}}'
    twice = await api.post("/challenge", content=body, headers={"Content-Type": "application/json"})
    problem = assert_problem(twice, 400, "invalid_request")
    assert "'b' appears twice" in problem["detail"]
    assert await phone.sent(within_s=0.3) == []


async def test_configured_code_length_is_used(make_api: ApiFactory, phone: Phone) -> None:
    api = await make_api(code={"digits": 8})
    challenge_id, code = await issue_code(api, phone)
    assert len(code) == 8
    assert_problem(
        await api.post("/verify", json={"challenge_id": challenge_id, "code": code[:6]}),
        400,
        "invalid_code_format",
    )
    assert (
        await api.post("/verify", json={"challenge_id": challenge_id, "code": code})
    ).status_code == 200


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"phone": "4155550123"}, "invalid_phone"),
        ({"phone": "+1415555"}, "invalid_phone"),
        ({"phone": "+14155550123", "client_ip": "not-an-ip"}, "invalid_client_ip"),
        ({"phone": "+14155550123", "purpose": "Log In!"}, "invalid_request"),
        ({"phone": "+14155550123", "purpose": "login\n"}, "invalid_request"),
        ({"phone": "+14155550123", "locale": "en\n"}, "invalid_request"),
        ({"phone": "+14155550123", "unknown": 1}, "invalid_request"),
        ({"phone": 14155550123}, "invalid_request"),
        ({}, "invalid_request"),
        ([], "invalid_request"),
    ],
)
async def test_bad_challenge_requests_are_400_problems(
    api: Client, phone: Phone, body: Any, code: str
) -> None:
    assert_problem(await api.post("/challenge", json=body), 400, code)
    assert (await phone.sent()) == []


@pytest.mark.parametrize(
    ("content", "content_type", "status", "code"),
    [
        (b"{not json", "application/json", 400, "invalid_request"),
        (b"", "application/json", 400, "invalid_request"),
        (b"[" * 6000 + b"]" * 6000, "application/json", 400, "invalid_request"),
        (b'{"x":' * 2500 + b"1" + b"}" * 2500, "application/json", 400, "invalid_request"),
        (b'{"phone": "\xff\xfe"}', "application/json", 400, "invalid_request"),
        (b'{"phone": 1e999999, "code": null}', "application/json", 400, "invalid_request"),
        (b'{"phone": "+14155550123"}', "text/plain", 415, "unsupported_media_type"),
        (
            b"phone=%2B14155550123",
            "application/x-www-form-urlencoded",
            415,
            "unsupported_media_type",
        ),
    ],
)
async def test_malformed_bodies_are_problems_not_500s(
    api: Client, content: bytes, content_type: str, status: int, code: str
) -> None:
    for path in ("/challenge", "/verify"):
        response = await api.post(path, content=content, headers={"content-type": content_type})
        assert_problem(response, status, code)


async def test_unknown_route_and_method_are_problems(api: Client) -> None:
    assert_problem(await api.get("/nowhere"), 404, "not_found")
    assert_problem(await api.put("/verify"), 405, "method_not_allowed")


async def test_send_throttle_is_429_with_rule_and_exact_retry_after(
    make_api: ApiFactory, phone: Phone
) -> None:
    api = await make_api(send_limits={"min_interval_seconds": 2, "per_hour": 3})
    await issue(api)
    body = assert_problem(await api.post("/challenge", json={"phone": PHONE}), 429, "rate_limited")
    assert body["rule"] == "number_min_interval"
    response = await api.post("/challenge", json={"phone": PHONE})
    retry_after = int(response.headers["retry-after"])
    assert retry_after == 2
    # One second early is still refused; on time is accepted.
    await asyncio.sleep(retry_after - 1)
    assert (await api.post("/challenge", json={"phone": PHONE})).status_code == 429
    await asyncio.sleep(1.05)
    await issue(api)
    await asyncio.sleep(2.05)
    await issue(api)
    # The hourly window of 3 is now full: the refusal names it and says to wait about an hour.
    await asyncio.sleep(2.05)
    body = assert_problem(await api.post("/challenge", json={"phone": PHONE}), 429, "rate_limited")
    assert body["rule"] == "number_per_hour"
    assert 3600 - 10 <= body["retry_after"] <= 3600
    assert len(await phone.sent()) == 3


async def test_daily_window_names_its_rule(make_api: ApiFactory) -> None:
    api = await make_api(send_limits={"min_interval_seconds": 0, "per_hour": 10, "per_day": 2})
    await issue(api)
    await issue(api)
    body = assert_problem(await api.post("/challenge", json={"phone": PHONE}), 429, "rate_limited")
    assert body["rule"] == "number_per_day"
    assert 86400 - 10 <= body["retry_after"] <= 86400


async def test_refused_send_consumes_nothing(make_api: ApiFactory) -> None:
    api = await make_api(send_limits={"min_interval_seconds": 1, "per_hour": 2})
    await issue(api)
    for _ in range(20):
        assert (await api.post("/challenge", json={"phone": PHONE})).status_code == 429
    await asyncio.sleep(1.05)
    # Twenty refusals did not fill the hourly window of two.
    created = await issue(api)
    assert created["resend_after"] > 3000


async def test_limits_are_per_number(make_api: ApiFactory) -> None:
    api = await make_api()
    await issue(api, PHONE)
    await issue(api, "+14155550124")
    assert (await api.post("/challenge", json={"phone": PHONE})).status_code == 429


async def test_oversized_body_is_413(api: Client, phone: Phone) -> None:
    body = b'{"phone": "+14155550123", "purpose": "' + b"a" * 20_000 + b'"}'
    response = await api.post(
        "/challenge", content=body, headers={"content-type": "application/json"}
    )
    assert_problem(response, 413, "request_too_large")
    assert (await phone.sent()) == []
