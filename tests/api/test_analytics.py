"""Analytics: counters per hour, country and provider, checked against a known sequence."""

from __future__ import annotations

import re
from typing import Any

import httpx

from tests.support.delivery import StartApi, acs_entry, delivered_to, delivery, issue
from tests.support.helpers import assert_problem, wrong
from tests.support.servers.providers import FakeAcs
from tests.support.webhooks import HEADERS, SECRET, acs_report

US = ["+14155550101", "+14155550102", "+14155550103"]
UK = "+447400123456"
UK_PREMIUM = "+449012345678"


def code_sent_to(acs: FakeAcs, number: str) -> str:
    [body] = [m.body for m in acs.delivered if m.to == number]
    match = re.search(r"\b(\d{6})\b", body)
    assert match
    return match.group(1)


async def report(api: httpx.AsyncClient, challenge_id: str, status: str) -> None:
    response = await api.post(
        "/webhooks/acs", json=[acs_report(challenge_id, status)], headers=HEADERS
    )
    assert response.status_code == 200


async def analytics(api: httpx.AsyncClient, **params: str) -> dict[str, Any]:
    response = await api.get("/analytics", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_analytics_match_a_known_sequence(start_api: StartApi, acs: FakeAcs) -> None:
    api = await start_api(acs_entry(acs), secrets={"acs_webhook_secret": SECRET})
    ids = {number: await issue(api, number) for number in [*US, UK]}
    assert_problem(
        await api.post("/challenge", json={"phone": UK_PREMIUM}), 403, "destination_not_allowed"
    )
    await delivered_to(acs, 4)
    for challenge_id in ids.values():
        await delivery(api, challenge_id)  # "sent" recorded
    await report(api, ids[US[0]], "Delivered")
    await report(api, ids[US[0]], "Delivered")  # Event Grid repeats: counted once
    await report(api, ids[UK], "Delivered")
    await report(api, ids[US[1]], "Failed")
    for number in (US[0], UK):
        code = code_sent_to(acs, number)
        if number == UK:
            bad = {"challenge_id": ids[number], "code": wrong(code)}
            assert (await api.post("/verify", json=bad)).status_code == 400
        ok = await api.post("/verify", json={"challenge_id": ids[number], "code": code})
        assert ok.status_code == 200
    assert (await api.delete(f"/challenge/{ids[US[2]]}")).status_code == 200
    assert (await api.delete(f"/challenge/{ids[US[2]]}")).status_code == 200  # counted once
    await api.put(f"/opt-outs/{US[1]}")
    await api.delete(f"/opt-outs/{US[1]}")

    body = await analytics(api)
    total = body["total"]
    assert {
        k: total[k]
        for k in (
            "issued",
            "sent",
            "delivered",
            "failed",
            "verified",
            "cancelled",
            "expired",
            "attempts_failed",
            "opt_outs",
            "opt_ins",
            "refused",
            "conversion_rate",
            "delivery_rate",
        )
    } == {
        "issued": 4,
        "sent": 4,
        "delivered": 2,
        "failed": 1,
        "verified": 2,
        "cancelled": 1,
        "expired": 0,
        "attempts_failed": 1,
        "opt_outs": 1,
        "opt_ins": 1,
        "refused": {"geo_number_type": 1},
        "conversion_rate": 0.5,
        "delivery_rate": 0.5,
    }
    assert total["time_to_verify_seconds"]["p50"] <= 5
    assert body["groups"] == []

    by_country = {g["key"]: g for g in (await analytics(api, group_by="country"))["groups"]}
    assert (by_country["US"]["issued"], by_country["US"]["verified"]) == (3, 1)
    assert (by_country["GB"]["issued"], by_country["GB"]["verified"]) == (1, 1)
    assert by_country["GB"]["refused"] == {"geo_number_type": 1}
    assert by_country["US"]["opt_outs"] == 1
    by_provider = {g["key"]: g for g in (await analytics(api, group_by="provider"))["groups"]}
    assert (by_provider["acs"]["sent"], by_provider["acs"]["delivered"]) == (4, 2)
    by_hour = (await analytics(api, group_by="hour"))["groups"]
    assert sum(g["issued"] for g in by_hour) == 4

    # A period before any of it: nothing.
    empty = await analytics(api, **{"from": "2020-01-01T00:00:00Z", "to": "2020-01-02T00:00:00Z"})
    assert empty["total"]["issued"] == 0
    assert_problem(
        await api.get(
            "/analytics", params={"from": "2020-01-02T00:00:00Z", "to": "2020-01-01T00:00:00Z"}
        ),
        400,
        "invalid_period",
    )
    assert_problem(
        await api.get("/analytics", params={"group_by": "planet"}), 400, "invalid_request"
    )
    # A bare number would decode as Unix seconds: the API takes RFC 3339 only.
    assert_problem(await api.get("/analytics", params={"to": "0.5"}), 400, "invalid_period")
