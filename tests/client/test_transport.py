"""The client against transports that answer what a test plans: its retry rules, its errors,
and the problem-code map against the committed spec."""

from __future__ import annotations

import json
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from otpservice_client import AsyncOtpClient, OtpClient
from otpservice_client._requests import Call, Calls
from otpservice_client.errors import (
    PROBLEM_CLASSES,
    IncorrectCode,
    OtpError,
    RateLimited,
    StoreUnavailable,
)

SPEC = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"
CREATED = {
    "challenge_id": "A8omNElmyVSmi0Gd.XgjgHSgeutOUeu_wJr4-_w",
    "status": "pending",
    "expires_at": "2026-12-08T10:00:00Z",
    "attempts_left": 5,
    "resend_after": 30,
}
Answer = httpx.Response | Exception


def problem(status: int, code: str, **extra: Any) -> httpx.Response:
    body = {"title": "t", "status": status, "detail": f"about {code}", "code": code, **extra}
    headers = {"content-type": "application/problem+json"}
    if "retry_after" in extra:
        headers["retry-after"] = str(extra["retry_after"])
    return httpx.Response(status, json=body, headers=headers)


class Planned:
    """Answers each request with the next planned answer, and keeps the requests."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


class FakeTime:
    """The client's clock and sleep: sleeping moves the clock, without waiting."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


def client(planned: Planned, fake: FakeTime) -> OtpClient:
    return OtpClient(
        "http://otp.test",
        "token",
        transport=httpx.MockTransport(planned),
        sleep=fake.sleep,
        clock=fake.clock,
    )


def connect_error() -> httpx.ConnectError:
    return httpx.ConnectError("refused")


def read_timeout() -> httpx.ReadTimeout:
    return httpx.ReadTimeout("slow")


def test_every_problem_code_of_the_spec_has_its_own_class() -> None:
    spec = json.loads(SPEC.read_text(encoding="utf-8"))
    codes = {
        code
        for item in spec["paths"].values()
        for operation in item.values()
        for response in operation.get("responses", {}).values()
        if (content := response.get("content", {}).get("application/problem+json"))
        for code in content["schema"]["allOf"][1]["properties"]["code"]["enum"]
    }
    assert set(PROBLEM_CLASSES) == codes
    assert len(set(PROBLEM_CLASSES.values())) == len(PROBLEM_CLASSES)
    assert all(
        issubclass(kind, OtpError) and kind is not OtpError for kind in PROBLEM_CLASSES.values()
    )


def test_an_unknown_code_raises_the_base_class_with_what_it_said() -> None:
    fake = FakeTime()
    with (
        client(Planned(problem(418, "teapot_brewing")), fake) as otp,
        pytest.raises(OtpError) as raised,
    ):
        otp.verify("id", "123456")
    assert type(raised.value) is OtpError
    assert (raised.value.status, raised.value.code, raised.value.detail) == (
        418,
        "teapot_brewing",
        "about teapot_brewing",
    )


def test_a_problem_carries_its_members() -> None:
    planned = Planned(problem(400, "incorrect_code", attempts_left=3))
    with client(planned, FakeTime()) as otp, pytest.raises(IncorrectCode) as raised:
        otp.verify("id", "123456")
    assert raised.value.attempts_left == 3


@pytest.mark.parametrize(
    ("first", "wait"),
    [
        (problem(503, "store_unavailable", retry_after=2), 2.0),
        (problem(503, "store_unavailable", retry_after=30), 5.0),  # capped at 5 s
        (problem(409, "idempotency_key_in_use"), 0.5),
        (connect_error(), 0.25),
        (read_timeout(), 0.25),
    ],
)
def test_a_start_is_retried_with_its_key_and_body(first: Answer, wait: float) -> None:
    planned = Planned(first, httpx.Response(201, json=CREATED))
    fake = FakeTime()
    with client(planned, fake) as otp:
        challenge = otp.start_challenge("+14155550123", client_ip="203.0.113.7")
    assert challenge.challenge_id == CREATED["challenge_id"]
    assert fake.slept == [wait]
    keys = {r.headers["idempotency-key"] for r in planned.requests}
    bodies = {r.content for r in planned.requests}
    assert len(planned.requests) == 2
    assert len(keys) == 1
    assert len(bodies) == 1
    assert json.loads(bodies.pop()) == {
        "phone": "+14155550123",
        "purpose": "login",
        "client_ip": "203.0.113.7",
    }


def test_a_start_keeps_the_callers_key_and_makes_one_otherwise() -> None:
    planned = Planned(httpx.Response(201, json=CREATED), httpx.Response(201, json=CREATED))
    with client(planned, FakeTime()) as otp:
        otp.start_challenge("+14155550123", idempotency_key="login-attempt-7")
        otp.start_challenge("+14155550123")
    given, made = (r.headers["idempotency-key"] for r in planned.requests)
    assert given == "login-attempt-7"
    assert len(made) == 36


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (problem(429, "rate_limited", rule="number_per_hour", retry_after=60), RateLimited),
        (problem(400, "invalid_phone"), OtpError),
        (problem(409, "idempotency_key_reused"), OtpError),
    ],
)
def test_a_start_is_never_retried_on_a_429_or_another_4xx(
    answer: httpx.Response, error: type[OtpError]
) -> None:
    planned = Planned(answer)
    fake = FakeTime()
    with client(planned, fake) as otp, pytest.raises(error) as raised:
        otp.start_challenge("+14155550123")
    assert len(planned.requests) == 1
    assert fake.slept == []
    if isinstance(raised.value, RateLimited):
        assert (raised.value.rule, raised.value.retry_after) == ("number_per_hour", 60)


def test_a_start_gives_up_after_three_retries() -> None:
    planned = Planned(*[connect_error() for _ in range(4)])
    fake = FakeTime()
    with client(planned, fake) as otp, pytest.raises(httpx.ConnectError):
        otp.start_challenge("+14155550123")
    assert len(planned.requests) == 4
    assert fake.slept == [0.25, 0.5, 0.75]


def test_a_start_gives_up_after_ten_seconds_in_all() -> None:
    planned = Planned(*[problem(503, "store_unavailable", retry_after=5) for _ in range(4)])
    fake = FakeTime()
    with client(planned, fake) as otp, pytest.raises(StoreUnavailable) as raised:
        otp.start_challenge("+14155550123")
    # 5 s, 5 s: a third wait would pass 10 s.
    assert fake.slept == [5.0, 5.0]
    assert len(planned.requests) == 3
    assert raised.value.retry_after == 5


@pytest.mark.parametrize(
    "call",
    [
        lambda otp: otp.verify("id", "123456"),
        lambda otp: otp.verify_totp("user-1", "123456"),
        lambda otp: otp.use_recovery_code("user-1", "0-00000-00000"),
        lambda otp: otp.activate_totp("f", "123456"),
    ],
)
def test_other_calls_are_retried_only_when_nothing_was_sent(
    call: Callable[[OtpClient], object],
) -> None:
    for outcome, sent in ((read_timeout(), 1), (problem(503, "store_unavailable"), 1)):
        planned = Planned(outcome)
        with (
            client(planned, FakeTime()) as otp,
            pytest.raises((httpx.ReadTimeout, StoreUnavailable)),
        ):
            call(otp)
        assert len(planned.requests) == sent
    planned = Planned(connect_error(), problem(404, "factor_not_found"))
    with client(planned, FakeTime()) as otp, pytest.raises(OtpError) as raised:
        call(otp)
    assert len(planned.requests) == 2
    assert raised.value.code == "factor_not_found"


async def test_the_async_client_keeps_the_same_rules() -> None:
    planned = Planned(
        problem(503, "hashing_busy", retry_after=1), httpx.Response(201, json=CREATED)
    )
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    async with AsyncOtpClient(
        "http://otp.test", transport=httpx.MockTransport(planned), sleep=sleep
    ) as otp:
        challenge = await otp.start_challenge("+14155550123")
        assert challenge.resend_after == 30
        verify = Planned(read_timeout())
        otp._http._transport = httpx.MockTransport(verify)
        with pytest.raises(httpx.ReadTimeout):
            await otp.verify("id", "123456")
    assert slept == [1.0]
    assert len(planned.requests) == 2
    assert len(verify.requests) == 1
    assert (
        planned.requests[0].headers["idempotency-key"]
        == planned.requests[1].headers["idempotency-key"]
    )


# Each call as the client makes it, with an id where the path has one.
CALLS: list[tuple[Call[Any], str]] = [
    (
        Calls.start_challenge(
            "+14155550123", purpose="login", locale=None, client_ip=None, idempotency_key=None
        ),
        "/challenge",
    ),
    (Calls.verify("c", "123456"), "/verify"),
    (Calls.get_challenge("c"), "/challenge/{challenge_id}"),
    (Calls.cancel_challenge("c"), "/challenge/{challenge_id}"),
    (Calls.enrol_totp("s", "l"), "/totp/factors"),
    (Calls.activate_totp("f", "123456", "654321"), "/totp/factors/{factor_id}/activate"),
    (Calls.verify_totp("s", "123456"), "/totp/verify"),
    (Calls.use_recovery_code("s", "0-00000-00000"), "/totp/recovery"),
    (Calls.regenerate_recovery_codes("f"), "/totp/factors/{factor_id}/recovery-codes"),
    (Calls.list_factors("s"), "/totp/factors"),
    (Calls.remove_factor("f"), "/totp/factors/{factor_id}"),
]
# Members the client adds itself (from a header), not from the body.
CLIENT_ONLY = {"replayed"}


def _properties(spec: dict[str, Any], ref: str) -> set[str]:
    schema = spec["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    return set(schema["properties"])


@pytest.mark.parametrize(("call", "path"), CALLS, ids=[path for _, path in CALLS])
def test_every_call_matches_the_spec_its_body_and_its_answer(call: Call[Any], path: str) -> None:
    spec = json.loads(SPEC.read_text(encoding="utf-8"))
    operation = spec["paths"][path][call.method.lower()]
    success = next(r for status, r in operation["responses"].items() if status.startswith("2"))
    answer_ref = success["content"]["application/json"]["schema"]["$ref"]
    assert set(call.answer.__struct_fields__) - CLIENT_ONLY == _properties(spec, answer_ref)
    members = spec["components"]["schemas"][answer_ref.rsplit("/", 1)[-1]]["properties"]
    for field in msgspec.structs.fields(call.answer):
        # A Struct member, alone or in a list: the spec's nested schema, member by member.
        kind, schema = field.type, members.get(field.name, {})
        if typing.get_origin(kind) is list:
            kind, schema = typing.get_args(kind)[0], schema.get("items", {})
        nested = getattr(kind, "__struct_fields__", None)
        if nested is not None:
            assert set(nested) == _properties(spec, schema["$ref"]), field.name
    if call.body is not None:
        request_ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert set(call.body) <= _properties(spec, request_ref)
    for name in call.params:
        assert name in {p["name"] for p in operation.get("parameters", [])}
