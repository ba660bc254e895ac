"""The example login app over HTTP, in front of the service on a real Redis: the session
rules a security reviewer checks, and the generic messages."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from litestar import Litestar
from otpservice_client import AsyncOtpClient
from standardwebhooks.webhooks import Webhook

from tests.examples.login import (
    USERS,
    csrf_of,
    load_login_app,
    log_in_with_password,
    post_form,
    write_users,
)
from tests.support.app import ApiFactory, Phone
from tests.support.servers.providers import EVENTS_SECRET

login_app = load_login_app()
Browser = Callable[[], httpx.AsyncClient]


@pytest.fixture
async def browsers(
    make_api: ApiFactory, tmp_path: Path
) -> AsyncIterator[Callable[[], httpx.AsyncClient]]:
    """Browsers (cookie jars) of one login app, in front of the service on the test Redis."""
    service = await make_api(send_limits={"min_interval_seconds": 0})
    otp = AsyncOtpClient("http://otp.test", transport=service._transport)  # type: ignore[arg-type]
    settings = login_app.Settings(users_file=str(write_users(tmp_path)))
    app: Litestar = login_app.create_app(settings, otp)
    async with AsyncExitStack() as stack:

        def browser() -> httpx.AsyncClient:
            client = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://login.test",
                follow_redirects=True,
            )
            stack.push_async_callback(client.aclose)
            return client

        yield browser


def code_sent_to(phone: Phone, number: str) -> str:
    codes = [code for to, _, code in phone.messages() if to == number]
    assert codes, f"no code sent to {number}"
    return codes[-1]


async def start_sms(browser: httpx.AsyncClient, name: str) -> httpx.Response:
    second = await log_in_with_password(browser, name)
    return await post_form(browser, second, "/sms/start")


async def test_a_password_then_an_sms_code_logs_in(browsers: Browser, phone: Phone) -> None:
    browser = browsers()
    first = await browser.get("/login")
    cookies = [first.cookies.get("login_session")]
    second = await post_form(browser, first, "/login", username="alice", password=USERS["alice"][0])
    assert "Text me a code" in second.text
    cookies.append(browser.cookies.get("login_session"))
    sms = await post_form(browser, second, "/sms/start")
    cookies.append(browser.cookies.get("login_session"))
    await phone.sent()
    done = await post_form(browser, sms, "/sms", code=code_sent_to(phone, USERS["alice"][1]))
    cookies.append(browser.cookies.get("login_session"))
    assert 'id="welcome"' in done.text
    assert "alice" in done.text
    # A new session id at each step.
    assert len(set(cookies)) == len(cookies) == 4
    set_cookie = (await browser.get("/")).headers["set-cookie"].lower()
    assert "httponly" in set_cookie
    assert "samesite=lax" in set_cookie


async def test_a_code_sent_for_one_account_cannot_finish_anothers_login(
    browsers: Browser, phone: Phone
) -> None:
    alice, bob = browsers(), browsers()
    await start_sms(alice, "alice")
    bob_page = await start_sms(bob, "bob")
    await phone.sent()
    alices_code = code_sent_to(phone, USERS["alice"][1])
    # Bob passed his own password and submits Alice's code, even naming her challenge: the
    # session holds his challenge, and the form's extra field is ignored.
    refused = await post_form(
        bob, bob_page, "/sms", code=alices_code, challenge_id="anything-from-the-form"
    )
    assert "That code didn&#x27;t work" in refused.text or "That code didn't work" in refused.text
    assert 'id="welcome"' not in refused.text
    mine = await post_form(bob, refused, "/sms", code=code_sent_to(phone, USERS["bob"][1]))
    assert "bob" in mine.text
    assert 'id="welcome"' in mine.text


async def test_a_post_without_its_csrf_token_is_refused(browsers: Browser) -> None:
    browser = browsers()
    await browser.get("/login")
    for data in ({"username": "alice", "password": USERS["alice"][0]}, {"csrf": "forged"}):
        response = await browser.post("/login", data=data)
        assert response.status_code == 403


async def test_an_unknown_user_and_a_wrong_password_get_one_message(browsers: Browser) -> None:
    browser = browsers()
    answers = []
    for name, password in (("mallory", "x"), ("alice", "wrong")):
        page = await browser.get("/login")
        answers.append(await post_form(browser, page, "/login", username=name, password=password))
    messages = {answer.text.split('id="error">')[1].split("<")[0] for answer in answers}
    assert messages == {"Wrong username or password."}


async def test_pages_with_secrets_are_not_cached(browsers: Browser, phone: Phone) -> None:
    browser = browsers()
    sms = await start_sms(browser, "alice")
    await phone.sent()
    await post_form(browser, sms, "/sms", code=code_sent_to(phone, USERS["alice"][1]))
    enrol = await browser.get("/enrol")
    assert enrol.headers["cache-control"] == "no-store"
    assert "otpauth://totp/" in enrol.text
    assert csrf_of(enrol)


async def test_otpservice_events_are_taken_only_when_signed(
    make_api: ApiFactory, tmp_path: Path
) -> None:
    service = await make_api()
    otp = AsyncOtpClient("http://otp.test", transport=service._transport)  # type: ignore[arg-type]
    settings = login_app.Settings(
        users_file=str(write_users(tmp_path)), events_secret=EVENTS_SECRET
    )
    app = login_app.create_app(settings, otp)
    body = b'{"type": "security.lockout", "timestamp": "2026-12-08T10:00:00Z", "data": {}}'
    now = datetime.now(UTC)
    signed = Webhook(EVENTS_SECRET).sign("evt-1", now, body.decode())
    headers = {
        "webhook-id": "evt-1",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signed,
    }
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://login.test"
    ) as client:
        assert (await client.post("/otp-events", content=body, headers=headers)).status_code == 204
        forged = {**headers, "webhook-signature": "v1,AAAA"}
        assert (await client.post("/otp-events", content=body, headers=forged)).status_code == 401


async def test_over_https_the_cookie_is_secure(browsers: Browser) -> None:
    browser = browsers()
    browser.base_url = httpx.URL("https://login.test")
    page = await browser.get("/login")
    cookie = page.headers["set-cookie"].lower()
    assert "secure" in cookie
    assert "httponly" in cookie


def test_the_end_users_address_is_the_sockets_unless_a_trusted_proxy_sent_it(
    tmp_path: Path,
) -> None:
    @dataclass
    class Peer:
        host: str

    @dataclass
    class Seen:
        client: Peer
        headers: dict[str, str]

    users = str(write_users(tmp_path))
    forwarded = {"x-forwarded-for": "198.51.100.7, 203.0.113.9"}
    direct = login_app.LoginApp(login_app.Settings(users_file=users), otp=None)
    proxied = login_app.LoginApp(
        login_app.Settings(users_file=users, trusted_proxy="10.0.0.2"), otp=None
    )
    assert direct.client_ip(Seen(Peer("10.0.0.2"), forwarded)) == "10.0.0.2"
    assert proxied.client_ip(Seen(Peer("10.0.0.2"), forwarded)) == "203.0.113.9"
    assert proxied.client_ip(Seen(Peer("192.0.2.1"), forwarded)) == "192.0.2.1"
