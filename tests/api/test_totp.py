"""Authenticator-app factors and recovery codes over HTTP, against a real Redis: the flow, one
approval per code, the subject's failure budget, recovery, swaps, tenants, and nothing secret
at rest."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import urllib.parse
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import pyotp
import pytest
import zxingcpp
from redis.asyncio import Redis

from otpservice.app import create_app
from otpservice.config.schema import Settings
from otpservice.crypto.totp import code_at
from otpservice.models import TotpParams
from otpservice.usecases import factors as factors_module
from otpservice.usecases.services import Services
from tests.support.app import TOTP_KEY, Phone, running
from tests.support.helpers import api_tokens, assert_problem, stored_bytes, wait_until_async
from tests.support.servers.redis import RedisServer

# A fixed moment (the clock seam), the start of a 30-s step, so steps around it are known.
T0 = 1_800_000_000.0
SUBJECT = "user-4821"
LABEL = "alice@example.com"


@dataclass
class Totp:
    """An app under test: its HTTP client, its use cases (for the clock seam), and the time
    its codes are computed for."""

    api: httpx.AsyncClient
    services: Services
    now: float = T0

    def at(self, moment: float) -> None:
        """Set the time the service computes steps for."""
        self.now = moment
        self.services.totp.clock = lambda _store_now: self.now


StartTotp = Callable[..., Awaitable[Totp]]


@pytest.fixture
async def start_totp(
    redis: Redis, make_settings: Callable[..., Settings], redis_server: RedisServer, phone: Phone
) -> AsyncIterator[StartTotp]:
    """Start apps on the session's Redis with the clock seam at ``T0``."""
    async with AsyncExitStack() as stack:

        async def start(**overrides: Any) -> Totp:
            app = create_app(make_settings(redis_server.url, **overrides), redis=redis)
            api = await stack.enter_async_context(running(app))
            totp = Totp(api, app.state.services)
            totp.at(T0)
            return totp

        yield start


@pytest.fixture
async def totp(start_totp: StartTotp) -> Totp:
    return await start_totp()


def secret_of(uri: str) -> bytes:
    """The secret in an otpauth:// URI."""
    encoded = urllib.parse.parse_qs(urllib.parse.urlparse(uri).query)["secret"][0]
    return base64.b32decode(encoded + "=" * (-len(encoded) % 8))


async def enrol(
    totp: Totp, subject: str = SUBJECT, headers: dict[str, str] | None = None
) -> tuple[str, bytes]:
    response = await totp.api.post(
        "/totp/factors", json={"subject": subject, "label": LABEL}, headers=headers
    )
    assert response.status_code == 201, response.text
    body = response.json()
    return body["factor_id"], secret_of(body["otpauth_uri"])


async def activate(
    totp: Totp, factor_id: str, code: str, headers: dict[str, str] | None = None, **extra: str
) -> httpx.Response:
    return await totp.api.post(
        f"/totp/factors/{factor_id}/activate", json={"code": code, **extra}, headers=headers
    )


async def active_factor(
    totp: Totp, subject: str = SUBJECT, headers: dict[str, str] | None = None
) -> tuple[str, bytes, list[str]]:
    """An active factor of ``subject`` (activated with the code of T0 - 60 s, so the steps
    from T0 - 30 s on are free): its id, secret and recovery codes."""
    factor_id, secret = await enrol(totp, subject, headers)
    totp.at(T0 - 60)
    response = await activate(totp, factor_id, code_at(secret, TotpParams(), T0 - 60), headers)
    totp.at(T0)
    assert response.status_code == 200, response.text
    return factor_id, secret, response.json()["recovery_codes"]


async def verify(
    totp: Totp, code: str, subject: str = SUBJECT, headers: dict[str, str] | None = None
) -> httpx.Response:
    return await totp.api.post(
        "/totp/verify", json={"subject": subject, "code": code}, headers=headers
    )


async def recover(totp: Totp, code: str, subject: str = SUBJECT) -> httpx.Response:
    return await totp.api.post("/totp/recovery", json={"subject": subject, "code": code})


def qr_text(svg: str) -> str:
    """Decode segno's SVG as a QR code: its path's modules drawn into a bitmap, read by zxing."""
    width = int(re.search(r'width="(\d+)"', svg).group(1))  # type: ignore[union-attr]
    height = int(re.search(r'height="(\d+)"', svg).group(1))  # type: ignore[union-attr]
    path = re.search(r' d="([^"]+)"', svg).group(1)  # type: ignore[union-attr]
    grid = [[255] * width for _ in range(height)]
    x = y = 0.0
    for command, first, second in re.findall(r"([MmHh])(-?[\d.]+)(?:\s(-?[\d.]+))?", path):
        if command in "Mm":
            x, y = (
                (float(first), float(second))
                if command == "M"
                else (x + float(first), y + float(second))
            )
            continue
        for offset in range(int(float(first))):
            grid[int(y)][int(x) + offset] = 0
        x += float(first)
    scale = 4
    image = b"".join(bytes(v for v in row for _ in range(scale)) * scale for row in grid)
    found = zxingcpp.read_barcode(memoryview(image).cast("B", (height * scale, width * scale)))
    assert found is not None, "the SVG holds no readable QR code"
    return str(found.text)


async def test_enrol_scan_activate_and_log_in(totp: Totp) -> None:
    response = await totp.api.post("/totp/factors", json={"subject": SUBJECT, "label": LABEL})
    assert response.status_code == 201
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["type"] == "totp"
    assert body["status"] == "pending"
    uri = body["otpauth_uri"]
    parsed = pyotp.parse_uri(uri)
    assert isinstance(parsed, pyotp.TOTP)
    assert (parsed.issuer, parsed.name, parsed.digits, parsed.interval) == (
        "otpservice",
        LABEL,
        6,
        30,
    )
    assert uri.startswith("otpauth://totp/otpservice:")
    assert "issuer=otpservice" in uri
    secret = secret_of(uri)
    assert len(secret) == 20  # SHA1's output
    svg = body["qr_svg"]
    assert svg.startswith("<?xml")
    assert 'xmlns="http://www.w3.org/2000/svg"' in svg
    assert qr_text(svg) == uri

    factor_id = body["factor_id"]
    listed = (await totp.api.get("/totp/factors", params={"subject": SUBJECT})).json()["items"]
    assert [(f["factor_id"], f["status"], f["label"]) for f in listed] == [
        (factor_id, "pending", LABEL)
    ]
    activated = await activate(totp, factor_id, code_at(secret, TotpParams(), T0))
    assert activated.status_code == 200
    assert activated.headers["cache-control"] == "no-store"
    recovery_codes = activated.json()["recovery_codes"]
    assert len(set(recovery_codes)) == 10
    assert all(
        re.fullmatch(r"\d-[0-9A-HJKMNP-TV-Z]{5}-[0-9A-HJKMNP-TV-Z]{5}", c) for c in recovery_codes
    )

    totp.at(T0 + 30)
    approved = await verify(totp, code_at(secret, TotpParams(), T0 + 30))
    assert approved.status_code == 200, approved.text
    assert approved.json()["factor_id"] == factor_id
    assert approved.json()["subject"] == SUBJECT
    (item,) = (await totp.api.get("/totp/factors", params={"subject": SUBJECT})).json()["items"]
    assert item["status"] == "active"
    assert item["recovery_codes_left"] == 10
    assert item["last_used_at"] is not None


async def test_the_activating_code_cannot_log_in(totp: Totp) -> None:
    factor_id, secret = await enrol(totp)
    code = code_at(secret, TotpParams(), T0)
    assert (await activate(totp, factor_id, code)).status_code == 200
    assert_problem(await verify(totp, code), 409, "code_already_used")


async def test_a_step_is_used_once_and_earlier_steps_never(totp: Totp) -> None:
    _, secret, _ = await active_factor(totp)
    params = TotpParams()
    assert (await verify(totp, code_at(secret, params, T0))).status_code == 200
    again = assert_problem(
        await verify(totp, code_at(secret, params, T0)), 409, "code_already_used"
    )
    earlier = assert_problem(
        await verify(totp, code_at(secret, params, T0 - 30)), 409, "code_already_used"
    )
    # Replays count as failures: the budget (lockout.max_failures, 10) goes down.
    assert (again["attempts_left"], earlier["attempts_left"]) == (9, 8)
    assert (await verify(totp, code_at(secret, params, T0 + 30))).status_code == 200


async def test_concurrent_requests_with_one_code_approve_once(start_totp: StartTotp) -> None:
    totp = await start_totp(totp={"lockout": {"max_failures": 50}})
    _, secret, _ = await active_factor(totp)
    code = code_at(secret, TotpParams(), T0)
    responses = await asyncio.gather(*(verify(totp, code) for _ in range(30)))
    statuses = Counter(r.status_code for r in responses)
    assert statuses[200] == 1, statuses
    assert {r.json()["code"] for r in responses if r.status_code != 200} == {"code_already_used"}


async def test_the_window_takes_one_step_each_side(totp: Totp) -> None:
    _, secret, _ = await active_factor(totp)
    params = TotpParams()
    for outside in (T0 + 60, T0 - 90):
        assert_problem(await verify(totp, code_at(secret, params, outside)), 400, "incorrect_code")
    assert (await verify(totp, code_at(secret, params, T0 - 30))).status_code == 200
    assert (await verify(totp, code_at(secret, params, T0 + 30))).status_code == 200


async def test_wrong_codes_lock_the_subject_and_a_recovery_code_unlocks_it(
    start_totp: StartTotp,
) -> None:
    totp = await start_totp(totp={"lockout": {"max_failures": 3, "base_seconds": 600}})
    factor_id, secret, recovery_codes = await active_factor(totp)
    right = code_at(secret, TotpParams(), T0)
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    assert assert_problem(await verify(totp, wrong), 400, "incorrect_code")["attempts_left"] == 2
    assert_problem(await verify(totp, wrong), 400, "incorrect_code")
    locked = assert_problem(await verify(totp, wrong), 429, "subject_locked")
    assert locked["retry_after"] == 600
    # Locked: the right code is refused too, and costs nothing more.
    refused = await verify(totp, right)
    assert_problem(refused, 429, "subject_locked")
    assert 599 <= int(refused.headers["retry-after"]) <= 600

    recovered = await recover(totp, recovery_codes[3].lower().replace("-", " "))
    assert recovered.status_code == 200, recovered.text
    assert recovered.json()["factor_id"] == factor_id
    assert recovered.json()["recovery_codes_left"] == 9
    assert (await verify(totp, right)).status_code == 200  # the lock went with the recovery
    assert_problem(await recover(totp, recovery_codes[3]), 400, "incorrect_code")


async def test_wrong_recovery_codes_count_toward_both_budgets(start_totp: StartTotp) -> None:
    totp = await start_totp(totp={"lockout": {"max_failures": 5}, "recovery_max_failures": 3})
    _, secret, recovery_codes = await active_factor(totp)
    wrong = "0-00000-00000"
    if wrong in recovery_codes:  # one chance in 2^50
        wrong = "0-00000-00001"
    for left in (2, 1):
        assert (
            assert_problem(await recover(totp, wrong), 400, "incorrect_code")["attempts_left"]
            == left
        )
    assert_problem(await recover(totp, wrong), 429, "subject_locked")
    # Recovery is blocked now, even with a right code; so are TOTP codes? Three of five are used.
    assert_problem(await recover(totp, recovery_codes[0]), 429, "subject_locked")
    right = code_at(secret, TotpParams(), T0)
    wrong_totp = f"{(int(right) + 1) % 1_000_000:06d}"
    assert (
        assert_problem(await verify(totp, wrong_totp), 400, "incorrect_code")["attempts_left"] == 1
    )


async def test_a_recovery_code_used_concurrently_approves_once(totp: Totp) -> None:
    _, _, recovery_codes = await active_factor(totp)
    responses = await asyncio.gather(*(recover(totp, recovery_codes[5]) for _ in range(10)))
    statuses = Counter(r.status_code for r in responses)
    assert statuses[200] == 1, statuses
    (left,) = [r.json()["recovery_codes_left"] for r in responses if r.status_code == 200]
    assert left == 9


async def test_new_recovery_codes_replace_the_old(totp: Totp) -> None:
    factor_id, _, old = await active_factor(totp)
    response = await totp.api.post(f"/totp/factors/{factor_id}/recovery-codes")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    new = response.json()["recovery_codes"]
    assert len(new) == 10
    assert not set(new) & set(old)
    assert_problem(await recover(totp, old[1]), 400, "incorrect_code")
    assert (await recover(totp, new[1])).status_code == 200


async def test_replacing_an_active_factor_needs_a_code_of_it(totp: Totp) -> None:
    old_id, old_secret, _ = await active_factor(totp)
    new_id, new_secret = await enrol(totp)
    params = TotpParams()
    new_code = code_at(new_secret, params, T0)
    assert_problem(await activate(totp, new_id, new_code), 409, "factor_exists")
    wrong_current = f"{(int(code_at(old_secret, params, T0)) + 1) % 1_000_000:06d}"
    refused = assert_problem(
        await activate(totp, new_id, new_code, current_code=wrong_current), 400, "incorrect_code"
    )
    assert refused["attempts_left"] == 9  # the subject's budget: the current code was wrong
    # The old factor's step of T0 - 60 activated it: its code is a replay (checked at T0 - 30,
    # where that step is inside the window).
    totp.at(T0 - 30)
    replayed = code_at(old_secret, params, T0 - 60)
    assert_problem(
        await activate(totp, new_id, new_code, current_code=replayed), 409, "code_already_used"
    )
    totp.at(T0)
    swapped = await activate(totp, new_id, new_code, current_code=code_at(old_secret, params, T0))
    assert swapped.status_code == 200, swapped.text
    items = (await totp.api.get("/totp/factors", params={"subject": SUBJECT})).json()["items"]
    assert [(f["factor_id"], f["status"]) for f in items] == [(new_id, "active")]
    assert old_id != new_id
    totp.at(T0 + 30)
    assert_problem(await verify(totp, code_at(old_secret, params, T0 + 30)), 400, "incorrect_code")
    assert (await verify(totp, code_at(new_secret, params, T0 + 30))).status_code == 200


async def test_activation_attempts_run_out(start_totp: StartTotp) -> None:
    totp = await start_totp(code={"max_attempts": 2})
    factor_id, secret = await enrol(totp)
    wrong = f"{(int(code_at(secret, TotpParams(), T0)) + 1) % 1_000_000:06d}"
    assert (
        assert_problem(await activate(totp, factor_id, wrong), 400, "incorrect_code")[
            "attempts_left"
        ]
        == 1
    )
    assert_problem(await activate(totp, factor_id, wrong), 410, "factor_expired")
    assert_problem(
        await activate(totp, factor_id, code_at(secret, TotpParams(), T0)), 410, "factor_expired"
    )


async def test_a_factor_keeps_its_parameters_when_the_config_changes(
    start_totp: StartTotp,
) -> None:
    before = await start_totp()
    old_id, old_secret, _ = await active_factor(before)
    after = await start_totp(totp={"digits": 8, "algorithm": "SHA256", "period_seconds": 60})
    assert (await verify(after, code_at(old_secret, TotpParams(), T0))).status_code == 200
    response = await after.api.post("/totp/factors", json={"subject": "user-2", "label": LABEL})
    uri = response.json()["otpauth_uri"]
    parsed = pyotp.parse_uri(uri)
    assert (parsed.digits, parsed.interval) == (8, 60)
    assert "algorithm=SHA256" in uri
    assert len(secret_of(uri)) == 32
    params = TotpParams(digits=8, period_seconds=60, algorithm="SHA256")
    activated = await activate(
        after, response.json()["factor_id"], code_at(secret_of(uri), params, T0)
    )
    assert activated.status_code == 200, activated.text
    # A six-digit code for the eight-digit factor is refused for its form, at no cost.
    assert_problem(await verify(after, "123456", subject="user-2"), 400, "invalid_code_format")
    assert old_id


async def test_bad_input_is_refused_and_costs_nothing(totp: Totp) -> None:
    _, secret, _ = await active_factor(totp)
    for subject in ("", "has space", "x" * 129, "ünïcode"):
        assert_problem(await verify(totp, "123456", subject=subject), 400, "invalid_subject")
        response = await totp.api.post("/totp/factors", json={"subject": subject, "label": LABEL})
        assert_problem(response, 400, "invalid_subject")
    for label in ("", "a:b", "x" * 65, "tab\there"):
        response = await totp.api.post("/totp/factors", json={"subject": "u", "label": label})
        assert_problem(response, 400, "invalid_label")
    for code in ("12345", "1234567", "12345a", "١٢٣٤٥٦", "12345678"):
        assert_problem(await verify(totp, code), 400, "invalid_code_format")
    assert_problem(await recover(totp, "not-a-code"), 400, "invalid_code_format")
    assert_problem(await verify(totp, "123456", subject="nobody"), 404, "factor_not_found")
    # None of it counted: the next wrong code still has the whole budget behind it.
    wrong = f"{(int(code_at(secret, TotpParams(), T0)) + 1) % 1_000_000:06d}"
    assert assert_problem(await verify(totp, wrong), 400, "incorrect_code")["attempts_left"] == 9


async def test_enrolment_is_limited_per_subject(totp: Totp) -> None:
    for _ in range(10):
        await enrol(totp)
    response = await totp.api.post("/totp/factors", json={"subject": SUBJECT, "label": LABEL})
    problem = assert_problem(response, 429, "rate_limited")
    assert problem["rule"] == "totp_enrol_per_subject"
    # The latest enrolment replaced the others: one pending factor.
    items = (await totp.api.get("/totp/factors", params={"subject": SUBJECT})).json()["items"]
    assert [f["status"] for f in items] == ["pending"]


async def test_clients_see_only_their_own_factors(start_totp: StartTotp) -> None:
    tokens = {
        "alpha": "alpha-token-0123456789abcdef",
        "beta": "beta-token-0123456789abcdef",
        "ops": "ops-token-0123456789abcdef",
    }
    totp = await start_totp(
        api_tokens=api_tokens(tokens, {"alpha": ["otp"], "beta": ["otp"], "ops": ["admin"]})
    )
    alpha, beta, ops = ({"Authorization": f"Bearer {tokens[n]}"} for n in ("alpha", "beta", "ops"))
    factor_id, secret, _ = await active_factor(totp, headers=alpha)
    code = code_at(secret, TotpParams(), T0)
    assert_problem(await verify(totp, code, headers=beta), 404, "factor_not_found")
    listed = await totp.api.get("/totp/factors", params={"subject": SUBJECT}, headers=beta)
    assert listed.json()["items"] == []
    assert_problem(
        await totp.api.get(
            "/totp/factors", params={"subject": SUBJECT, "client": "alpha"}, headers=beta
        ),
        403,
        "forbidden",
    )
    for call in (
        totp.api.delete(f"/totp/factors/{factor_id}", headers=beta),
        totp.api.post(f"/totp/factors/{factor_id}/recovery-codes", headers=beta),
        activate(totp, factor_id, code, headers=beta),
    ):
        assert_problem(await call, 404, "factor_not_found")
    # The same subject under beta is another user.
    await active_factor(totp, headers=beta)
    assert (await verify(totp, code, headers=alpha)).status_code == 200
    # An operator lists and removes any client's factor, audited.
    seen = await totp.api.get(
        "/totp/factors", params={"subject": SUBJECT, "client": "alpha"}, headers=ops
    )
    assert [f["factor_id"] for f in seen.json()["items"]] == [factor_id]
    removed = await totp.api.delete(f"/totp/factors/{factor_id}", headers=ops)
    assert removed.json() == {"factor_id": factor_id, "status": "removed"}
    totp.at(T0 + 30)
    assert_problem(
        await verify(totp, code_at(secret, TotpParams(), T0 + 30), headers=alpha),
        404,
        "factor_not_found",
    )


async def test_no_secret_recovery_code_subject_or_label_is_stored_or_logged(
    start_totp: StartTotp, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    totp = await start_totp(totp={"lockout": {"max_failures": 2}})
    factor_id, secret, recovery_codes = await active_factor(totp)
    # A lockout (audited) and a recovery from it.
    for _ in range(2):
        await verify(totp, f"{(int(code_at(secret, TotpParams(), T0)) + 1) % 1_000_000:06d}")
    await recover(totp, recovery_codes[0])
    await verify(totp, code_at(secret, TotpParams(), T0))
    await totp.api.post(f"/totp/factors/{factor_id}/recovery-codes")
    await totp.services.analytics.flush()
    b32 = base64.b32encode(secret).decode()
    forms = [
        b32,
        b32.rstrip("="),
        b32.lower(),
        b32.lower().rstrip("="),
        secret.hex(),
        secret.hex().upper(),
        base64.b64encode(secret).decode(),
        base64.urlsafe_b64encode(secret).decode().rstrip("="),
    ]
    for code in recovery_codes:
        forms += [code, code.replace("-", ""), code[2:].replace("-", ""), code[2:]]
    stored = await stored_bytes(redis, "*")
    logged = caplog.text
    for form in forms:
        assert form.encode() not in stored, f"{form!r} is in Redis"
        assert form not in logged, f"{form!r} is in the logs"
    assert secret not in stored
    # The label is sealed; the subject is in no key name, and in clear only in the events for
    # the app (which name the subject they are about, as others name their number).
    assert LABEL.encode() not in stored
    outside_events = b"".join(
        line for line in stored.split(b"\n") if not line.startswith(b"otp:{events")
    )
    assert SUBJECT.encode() not in outside_events
    keys = [key async for key in redis.scan_iter("*")]
    assert not any(SUBJECT.encode() in key or LABEL.encode() in key for key in keys)


async def test_erasing_a_subject_removes_its_factors_and_events(totp: Totp, redis: Redis) -> None:
    _, secret, recovery_codes = await active_factor(totp)
    await recover(totp, recovery_codes[0])
    await active_factor(totp, subject="someone-else")

    async def relayed() -> list[bytes]:
        return [fields[b"type"] for _, fields in await redis.xrange("otp:{events}:feed")]

    # Both subjects' activations and the recovery are in the feed before the erasure.
    await wait_until_async(
        relayed, lambda kinds: kinds.count(b"totp.activated") == 2 and b"recovery.used" in kinds
    )
    response = await totp.api.delete(f"/personal-data/subjects/{SUBJECT}")
    assert response.status_code == 200, response.text
    assert response.json()["records_erased"] >= 2
    assert response.json()["events_erased"] >= 2
    assert_problem(await verify(totp, code_at(secret, TotpParams(), T0)), 404, "factor_not_found")
    assert (await totp.api.get("/totp/factors", params={"subject": SUBJECT})).json()["items"] == []
    feed = b"".join(
        value for _, fields in await redis.xrange("otp:{events}:feed") for value in fields.values()
    )
    assert SUBJECT.encode() not in feed
    assert b"someone-else" in feed


async def test_events_and_analytics_count_factors_codes_and_recoveries(
    start_totp: StartTotp, redis: Redis
) -> None:
    totp = await start_totp(totp={"lockout": {"max_failures": 2}})
    factor_id, secret, recovery_codes = await active_factor(totp)
    right = code_at(secret, TotpParams(), T0)
    assert (await verify(totp, right)).status_code == 200
    assert_problem(await verify(totp, right), 409, "code_already_used")
    assert_problem(await verify(totp, right), 429, "subject_locked")
    assert (await recover(totp, recovery_codes[2])).status_code == 200

    async def events() -> dict[str, dict[str, Any]]:
        return {
            fields[b"type"].decode(): json.loads(fields[b"data"])
            for _, fields in await redis.xrange("otp:{events}:feed")
        }

    await wait_until_async(
        lambda: _has_all(events, {"totp.activated", "security.lockout", "recovery.used"}), bool
    )
    found = await events()
    assert found["totp.activated"] == {
        "factor_id": factor_id,
        "subject": SUBJECT,
        "client": "default",
    }
    assert found["security.lockout"]["subject"] == SUBJECT
    assert found["recovery.used"]["recovery_codes_left"] == 9
    await totp.services.analytics.flush()
    total = (await totp.api.get("/analytics")).json()["total"]
    assert {
        k: total[k]
        for k in (
            "totp_enrolled",
            "totp_activated",
            "totp_verified",
            "totp_failed",
            "recovery_used",
        )
    } == {
        "totp_enrolled": 1,
        "totp_activated": 1,
        "totp_verified": 1,
        "totp_failed": 2,
        "recovery_used": 1,
    }
    metrics = (await totp.api.get("/metrics")).text
    assert 'otp_totp_events_total{event="recovery_used"}' in metrics


async def _has_all(read: Callable[[], Awaitable[dict[str, Any]]], kinds: set[str]) -> bool:
    return kinds <= (await read()).keys()


async def test_rfc_6238_vectors_through_the_store_and_the_use_case(totp: Totp) -> None:
    """Appendix B's seeds (erratum 2866), sealed into factors through the store layer and
    checked through the use case at each of the vectors' times, in order."""
    vectors = {
        "SHA1": (
            b"12345678901234567890",
            ["94287082", "07081804", "14050471", "89005924", "69279037", "65353130"],
        ),
        "SHA256": (
            b"12345678901234567890123456789012",
            ["46119246", "68084774", "67062674", "91819424", "90698825", "77737706"],
        ),
        "SHA512": (
            b"1234567890" * 6 + b"1234",
            ["90693936", "25091201", "99943326", "93441116", "38618901", "47863826"],
        ),
    }
    times = [59, 1111111109, 1111111111, 1234567890, 2000000000, 20000000000]
    services = totp.services
    runtime_keys = services.totp._keys
    sealing = services.totp._totp_keys
    assert sealing is not None
    store = services.totp._store
    for algorithm, (seed, codes) in vectors.items():
        subject = f"rfc-{algorithm}"
        ref = runtime_keys.new_factor(runtime_keys.subject("default", subject))
        params = TotpParams(digits=8, algorithm=algorithm)  # type: ignore[arg-type]
        await store.enrol(
            ref,
            client="default",
            sealed_secret=sealing.seal("secret", seed, ref.factor_id),
            sealed_label=sealing.seal("label", b"rfc", ref.factor_id),
            sealed_subject=sealing.seal("subject", subject.encode(), ref.keys.tag),
            params=params,
            pending_ttl_seconds=600,
        )
        totp.at(times[0])
        await services.totp.activate(ref.factor_id, codes[0], client="default")
        for moment, code in zip(times[1:], codes[1:], strict=True):
            totp.at(moment)
            approval = await services.totp.verify(subject, code, client="default")
            assert approval.factor_id == ref.factor_id


async def test_removing_a_factor_stops_its_codes(totp: Totp) -> None:
    factor_id, secret, recovery_codes = await active_factor(totp)
    removed = await totp.api.delete(f"/totp/factors/{factor_id}")
    assert removed.json() == {"factor_id": factor_id, "status": "removed"}
    assert_problem(await verify(totp, code_at(secret, TotpParams(), T0)), 404, "factor_not_found")
    assert_problem(await recover(totp, recovery_codes[0]), 404, "factor_not_found")
    assert_problem(await totp.api.delete(f"/totp/factors/{factor_id}"), 404, "factor_not_found")
    assert_problem(await totp.api.delete("/totp/factors/not-an-id"), 404, "factor_not_found")


async def test_concurrent_wrong_codes_cannot_overshoot_the_budget(
    start_totp: StartTotp, monkeypatch: pytest.MonkeyPatch
) -> None:
    totp = await start_totp(totp={"lockout": {"max_failures": 3}})
    _, secret, _ = await active_factor(totp)
    wrong = f"{(int(code_at(secret, TotpParams(), T0)) + 1) % 1_000_000:06d}"
    checked = 0
    match = factors_module._match  # counting the codes compared

    def counting(*args: Any) -> int | None:
        nonlocal checked
        checked += 1
        return match(*args)

    monkeypatch.setattr(factors_module, "_match", counting)
    responses = await asyncio.gather(*(verify(totp, wrong) for _ in range(30)))
    codes = Counter(r.json()["code"] for r in responses)
    assert codes["incorrect_code"] + codes["subject_locked"] == 30, codes
    # Three codes were compared (the third locked the subject); every other request was
    # refused before its code was looked at.
    assert checked == 3, codes


async def test_without_a_totp_key_the_routes_say_so(start_totp: StartTotp) -> None:
    totp = await start_totp(secrets={"totp_key": None})
    response = await totp.api.post("/totp/factors", json={"subject": SUBJECT, "label": LABEL})
    problem = assert_problem(response, 501, "totp_not_configured")
    assert "secrets.totp_key" in problem["detail"]
    assert_problem(await verify(totp, "123456"), 501, "totp_not_configured")


async def test_wrong_recovery_codes_during_a_lock_lock_again_when_it_ends(
    start_totp: StartTotp, redis: Redis
) -> None:
    # One-second locks, so the test can wait one out.
    totp = await start_totp(
        totp={"lockout": {"max_failures": 2, "base_seconds": 1, "max_seconds": 1}}
    )
    _, secret, _ = await active_factor(totp)
    right = code_at(secret, TotpParams(), T0)
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    for _ in range(2):
        await verify(totp, wrong)
    assert_problem(await verify(totp, right), 429, "subject_locked")
    # Two wrong recovery codes while locked: failures that must not vanish, nor jam the subject.
    for _ in range(2):
        assert_problem(await recover(totp, "0-00000-00000"), 400, "incorrect_code")
    await asyncio.sleep(1.1)
    relocked = assert_problem(await verify(totp, right), 429, "subject_locked")
    await asyncio.sleep(relocked["retry_after"] + 0.1)
    assert (await verify(totp, right)).status_code == 200

    async def lockouts() -> int:
        entries = await redis.xrange("otp:{events}:feed")
        return sum(1 for _, fields in entries if fields[b"type"] == b"security.lockout")

    # Two lockouts, each told once: the wrong TOTP codes', and the one the recovery codes
    # made when the first had ended.
    assert await wait_until_async(lockouts, lambda count: count >= 2) == 2


async def test_a_stale_check_does_not_shorten_the_recovery_block(
    start_totp: StartTotp, redis: Redis
) -> None:
    # Failures remembered a minute only: counting a stale check sets the guard's expiry to
    # that, which must not cut short a day-long record of wrong recovery codes.
    totp = await start_totp(totp={"lockout": {"memory_seconds": 60}})
    _, secret, _ = await active_factor(totp)
    assert_problem(await recover(totp, "0-00000-00000"), 400, "incorrect_code")
    keys = totp.services.totp._keys.subject("default", SUBJECT)
    await redis.zadd(keys.inflight, {"lost-check": 1})  # a check whose verdict never came
    assert (await verify(totp, code_at(secret, TotpParams(), T0))).status_code == 200
    assert await redis.pttl(keys.guard) > 23 * 3600 * 1000


async def test_wrong_recovery_codes_that_lock_the_subject_say_so(
    start_totp: StartTotp, redis: Redis
) -> None:
    totp = await start_totp(totp={"lockout": {"max_failures": 2}})
    _, secret, _ = await active_factor(totp)
    for _ in range(2):
        assert_problem(await recover(totp, "0-00000-00000"), 400, "incorrect_code")
    assert_problem(await verify(totp, code_at(secret, TotpParams(), T0)), 429, "subject_locked")

    async def lockouts() -> list[dict[str, Any]]:
        entries = await redis.xrange("otp:{events}:feed")
        return [
            json.loads(fields[b"data"])
            for _, fields in entries
            if fields[b"type"] == b"security.lockout"
        ]

    (event,) = await wait_until_async(lockouts, bool)
    assert event["subject"] == SUBJECT
    # The audit stream records the lockout without the subject (it outlives an erasure).
    audited = b"".join(v for _, f in await redis.xrange("otp:{audit}:stream") for v in f.values())
    assert b"security.lockout" in audited
    assert SUBJECT.encode() not in audited


async def test_a_recovery_code_replaced_while_it_is_checked_does_not_work(totp: Totp) -> None:
    factor_id, _, old = await active_factor(totp)
    hasher = totp.services.totp._hasher
    check = hasher.check_keyed
    fresh: list[str] = []

    async def regenerate_first(*args: Any) -> bool:
        response = await totp.api.post(f"/totp/factors/{factor_id}/recovery-codes")
        fresh.extend(response.json()["recovery_codes"])
        return await check(*args)

    hasher.check_keyed = regenerate_first  # type: ignore[method-assign]
    assert_problem(await recover(totp, old[4]), 400, "incorrect_code")
    hasher.check_keyed = check  # type: ignore[method-assign]
    # The new code of that slot was not used up by the old one.
    assert (await recover(totp, fresh[4])).status_code == 200


async def test_a_rotated_totp_key_keeps_factors_working_until_they_move(
    start_totp: StartTotp,
) -> None:
    new_key = base64.b64encode(b"another-totp-key-for-the-tests!!").decode()
    before = await start_totp()
    factor_id, secret, _ = await active_factor(before)
    old_key = before.services.totp._totp_keys
    assert old_key is not None
    rotating = await start_totp(secrets={"totp_key": new_key, "previous_totp_key": TOTP_KEY})
    assert (await verify(rotating, code_at(secret, TotpParams(), T0))).status_code == 200
    # Regenerating moves the factor to the new key (secret, label and subject sealed anew).
    moved = await rotating.api.post(f"/totp/factors/{factor_id}/recovery-codes")
    assert moved.status_code == 200
    after = await start_totp(secrets={"totp_key": new_key})
    after.at(T0 + 30)
    assert (await verify(after, code_at(secret, TotpParams(), T0 + 30))).status_code == 200
    (item,) = (await after.api.get("/totp/factors", params={"subject": SUBJECT})).json()["items"]
    assert item["label"] == LABEL
    assert (await recover(after, moved.json()["recovery_codes"][0])).status_code == 200
    # A factor left on the retired key: it answers 410 (enrol again), counts nothing against
    # the user, and cannot be moved.
    stranded_id, stranded, _ = await active_factor(before, subject="user-2")
    stranded_code = code_at(stranded, TotpParams(), T0 + 30)
    for _ in range(12):  # more than lockout.max_failures: none of them counted
        gone = await verify(after, stranded_code, subject="user-2")
        assert_problem(gone, 410, "factor_expired")
    regenerated = await after.api.post(f"/totp/factors/{stranded_id}/recovery-codes")
    assert_problem(regenerated, 410, "factor_expired")
