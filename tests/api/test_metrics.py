"""GET /metrics: the Prometheus counters move with what happens."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.delivery import StartApi, delivery, issue, twilio_entry
from tests.support.helpers import PHONE, assert_problem
from tests.support.servers.providers import FakeTwilio, Planned

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def samples(api: httpx.AsyncClient) -> Samples:
    response = await api.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


async def test_metrics_count_requests_outcomes_and_providers(
    start_api: StartApi, twilio: FakeTwilio
) -> None:
    twilio.plan = [Planned("accept"), Planned("busy", retry_after="0")]
    api = await start_api(
        twilio_entry(twilio), outbox={"retry_base_seconds": 0.05, "retry_max_seconds": 0.1}
    )
    before = await samples(api)
    challenge_id = await issue(api)
    assert (await delivery(api, challenge_id))["status"] == "sent"
    assert_problem(
        await api.post("/challenge", json={"phone": "+449012345678"}),
        403,
        "destination_not_allowed",
    )
    second = await issue(api, "+14155550188")
    assert (await delivery(api, second))["status"] == "sent"  # after one 429
    after = await samples(api)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("otp_http_requests_total", route="/challenge", method="POST", status="201") == 2
    assert grew("otp_http_requests_total", route="/challenge", method="POST", status="403") == 1
    assert grew("otp_http_request_duration_seconds_count", route="/challenge") == 3
    assert grew("otp_challenges_total", outcome="issued") == 2
    assert grew("otp_challenges_total", outcome="refused") == 1
    assert grew("otp_throttle_refusals_total", rule="geo_number_type") == 1
    assert grew("otp_deliveries_total", status="sent", provider="twilio") == 2
    assert grew("otp_provider_errors_total", provider="twilio", reason="busy") == 1  # the 429
    assert grew("otp_provider_send_duration_seconds_count", provider="twilio") == 3
    assert PHONE not in (await api.get("/metrics")).text
