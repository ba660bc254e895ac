"""An example login app: a password, then a second factor through otpservice (an SMS code or
an authenticator app, with recovery codes), server-rendered with Litestar and no build step.

It calls otpservice only through ``otpservice_client``. What a real app must get right is
here: the pending login lives in the session and the forms carry only what the user typed
(so a code approved for one account cannot finish another's login), the session id changes at
each step, every POST carries a CSRF token, cookies are HttpOnly and SameSite=Lax (and Secure
over https), pages with secrets are not cached, and the end user sees generic messages.

Run: ``LOGIN_USERS=users.json uvicorn --factory login_app:create_app`` (see README.md).
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from litestar import Litestar, Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.enums import RequestEncodingType
from litestar.exceptions import NotAuthorizedException
from litestar.params import Body
from otpservice_client import AsyncOtpClient
from otpservice_client.errors import (
    CodeAlreadyUsed,
    FactorNotFound,
    IncorrectCode,
    InvalidCodeFormat,
    OtpError,
    Refused,
    SubjectLocked,
)
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

log = logging.getLogger("login_app")
COOKIE = "login_session"
WRONG_PASSWORD = "Wrong username or password."  # noqa: S105 (a message, not a secret)
WRONG_CODE = "That code didn't work. Check it and try again."
Form = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]


@dataclass(frozen=True)
class User:
    """An account: its name (also otpservice's subject), password hash and phone."""

    name: str
    password_hash: str
    phone: str


@dataclass
class Session:
    """What the server keeps for one browser: the CSRF token, the login in progress (the user
    who passed the password, the challenge sent to them) and who is logged in."""

    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    pending_user: str | None = None
    challenge_id: str | None = None
    user: str | None = None
    # The authenticator said the user is locked: no SMS is offered as a way around it.
    sms_blocked: bool = False


@dataclass
class Settings:
    """From the environment: OTP_URL, OTP_TOKEN, LOGIN_USERS, LOGIN_TRUSTED_PROXY."""

    otp_url: str = "http://127.0.0.1:8080"
    otp_token: str | None = None
    users_file: str = "users.json"
    # The address of a reverse proxy whose X-Forwarded-For is believed; none by default.
    trusted_proxy: str | None = None
    # otpservice's events.secret: checks the events it POSTs to /otp-events (none: refused).
    events_secret: str | None = None

    @classmethod
    def from_environment(cls) -> Settings:
        return cls(
            otp_url=os.environ.get("OTP_URL", cls.otp_url),
            otp_token=os.environ.get("OTP_TOKEN") or None,
            users_file=os.environ.get("LOGIN_USERS", cls.users_file),
            trusted_proxy=os.environ.get("LOGIN_TRUSTED_PROXY") or None,
            events_secret=os.environ.get("LOGIN_EVENTS_SECRET") or None,
        )


class Sessions:
    """Server-side sessions behind a random id in a signed, HttpOnly cookie."""

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)
        self._by_id: dict[str, Session] = {}

    def _sign(self, session_id: str) -> str:
        mac = hmac.new(self._key, session_id.encode(), hashlib.sha256).hexdigest()[:32]
        return f"{session_id}.{mac}"

    def find(self, request: Request[Any, Any, Any]) -> tuple[str, Session]:
        """The request's session (a new one when it has none or a forged cookie)."""
        cookie = request.cookies.get(COOKIE, "")
        session_id = cookie.partition(".")[0]
        if hmac.compare_digest(self._sign(session_id), cookie) and session_id in self._by_id:
            return session_id, self._by_id[session_id]
        return self.rotate("", Session())

    def rotate(self, old_id: str, session: Session) -> tuple[str, Session]:
        """Keep ``session`` under a new id (each login step gets one), forgetting the old."""
        self._by_id.pop(old_id, None)
        session.csrf = secrets.token_urlsafe(24)
        new_id = secrets.token_urlsafe(32)
        self._by_id[new_id] = session
        return new_id, session

    def cookie(self, session_id: str, *, secure: bool) -> Cookie:
        return Cookie(
            key=COOKIE,
            value=self._sign(session_id),
            httponly=True,
            samesite="lax",
            secure=secure,
            path="/",
        )


def load_users(path: str) -> dict[str, User]:
    """The accounts of a JSON file: ``[{"name", "password_hash", "phone"}]``."""
    entries = json.loads(Path(path).read_text(encoding="utf-8"))
    return {entry["name"]: User(**entry) for entry in entries}


def page(title: str, body: str, *, status: int = 200, no_store: bool = False) -> Response[str]:
    headers = {"Cache-Control": "no-store"} if no_store else {}
    text = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;max-width:32em;margin:3em auto}"
        "input,button{font-size:1.1em;margin:.3em 0}.error{color:#b00}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    return Response(text, status_code=status, media_type="text/html", headers=headers)


def form(action: str, csrf: str, fields: str, button: str) -> str:
    return (
        f'<form method="post" action="{action}">'
        f'<input type="hidden" name="csrf" value="{html.escape(csrf)}">{fields}'
        f'<button type="submit">{html.escape(button)}</button></form>'
    )


def code_field(name: str = "code", label: str = "Code") -> str:
    return (
        f'<label>{label} <input name="{name}" id="{name}" inputmode="numeric" '
        'autocomplete="one-time-code" required></label><br>'
    )


def error(message: str | None) -> str:
    return f'<p class="error" id="error">{html.escape(message)}</p>' if message else ""


class LoginApp:
    """The handlers' shared state: the users, the sessions, the otpservice client."""

    def __init__(self, settings: Settings, otp: AsyncOtpClient) -> None:
        self.settings = settings
        self.users = load_users(settings.users_file)
        self.sessions = Sessions()
        self.otp = otp
        self.hasher = PasswordHasher()
        # Checked when the user is unknown, so both answers take as long.
        self.dummy_hash = self.hasher.hash(secrets.token_urlsafe(16))

    def client_ip(self, request: Request[Any, Any, Any]) -> str | None:
        """The end user's address: the socket's, or X-Forwarded-For's behind our proxy."""
        peer = request.client.host if request.client else None
        forwarded = request.headers.get("x-forwarded-for")
        if forwarded and peer is not None and peer == self.settings.trusted_proxy:
            return forwarded.split(",")[-1].strip()
        return peer

    def secure(self, request: Request[Any, Any, Any]) -> bool:
        return request.url.scheme == "https"

    def check_password(self, name: str, password: str) -> User | None:
        user = self.users.get(name)
        try:
            self.hasher.verify(user.password_hash if user else self.dummy_hash, password)
        except (VerificationError, InvalidHashError):
            return None
        return user


def app_of(request: Request[Any, Any, Any]) -> LoginApp:
    login: LoginApp = request.app.state.login
    return login


def checked(request: Request[Any, Any, Any], data: dict[str, str]) -> tuple[str, Session]:
    """The session of a POST whose CSRF token is right; a 403 otherwise."""
    session_id, session = app_of(request).sessions.find(request)
    if not hmac.compare_digest(data.get("csrf", ""), session.csrf):
        raise _Forbidden()
    return session_id, session


class _Forbidden(Exception):
    """A POST without the session's CSRF token."""


def forbidden(_: Request[Any, Any, Any], __: _Forbidden) -> Response[str]:
    return page("Forbidden", "<p>This form has expired. Go back and try again.</p>", status=403)


def answer(
    request: Request[Any, Any, Any], session_id: str, response: Response[Any]
) -> Response[Any]:
    """``response`` with the session's cookie set."""
    response.set_cookie(
        app_of(request).sessions.cookie(session_id, secure=app_of(request).secure(request))
    )
    return response


def redirect(request: Request[Any, Any, Any], session_id: str, to: str) -> Response[Any]:
    return answer(request, session_id, Response(b"", status_code=303, headers={"Location": to}))


def logged_in(
    request: Request[Any, Any, Any], session_id: str, session: Session, user: str
) -> Response[Any]:
    """Finish the login: a new session id, nothing pending."""
    session.pending_user, session.challenge_id, session.user = None, None, user
    new_id, _ = app_of(request).sessions.rotate(session_id, session)
    return redirect(request, new_id, "/")


def wait_message(exc: OtpError) -> str:
    seconds = exc.retry_after or 60
    return f"Too many tries. Please wait {seconds} seconds before trying again."


@get("/healthz", media_type="text/plain")
async def healthz() -> str:
    """For the container's probes."""
    return "ok"


@post("/otp-events", status_code=204)
async def otp_events(request: Request[Any, Any, Any]) -> None:
    """otpservice's events (``events.callback_url``), signed the Standard Webhooks way: a
    real app would act on them (a lockout, an opt-out); this one logs their type."""
    secret = app_of(request).settings.events_secret
    body = await request.body()
    try:
        if secret is None:
            raise WebhookVerificationError("no LOGIN_EVENTS_SECRET")
        event = Webhook(secret).verify(body, dict(request.headers))
    except WebhookVerificationError:
        raise NotAuthorizedException("the event's signature does not verify") from None
    log.info("otpservice event %s", event.get("type"))


@get("/")
async def home(request: Request[Any, Any, Any]) -> Response[Any]:
    session_id, session = app_of(request).sessions.find(request)
    if session.user is None:
        return redirect(request, session_id, "/login")
    body = (
        f'<p id="welcome">You are logged in as <b>{html.escape(session.user)}</b>.</p>'
        '<p><a href="/enrol" id="enrol">Set up an authenticator app</a></p>'
        + form("/logout", session.csrf, "", "Log out")
    )
    return answer(request, session_id, page("Welcome", body))


@get("/login")
async def login_page_route(request: Request[Any, Any, Any]) -> Response[Any]:
    return await login_page(request)


async def login_page(request: Request[Any, Any, Any], message: str | None = None) -> Response[Any]:
    session_id, session = app_of(request).sessions.find(request)
    fields = (
        '<label>Username <input name="username" id="username" required></label><br>'
        '<label>Password <input name="password" id="password" type="password" required></label><br>'
    )
    body = error(message) + form("/login", session.csrf, fields, "Log in")
    return answer(request, session_id, page("Log in", body))


@post("/login", status_code=200)
async def login(request: Request[Any, Any, Any], data: Form) -> Response[Any]:
    session_id, session = checked(request, data)
    app = app_of(request)
    user = app.check_password(data.get("username", ""), data.get("password", ""))
    if user is None:
        return await login_page(request, WRONG_PASSWORD)
    session = Session(pending_user=user.name)
    session_id, session = app.sessions.rotate(session_id, session)
    return redirect(request, session_id, "/second-factor")


@get("/second-factor")
async def second_factor_route(request: Request[Any, Any, Any]) -> Response[Any]:
    return await second_factor(request)


async def second_factor(
    request: Request[Any, Any, Any], message: str | None = None
) -> Response[Any]:
    app = app_of(request)
    session_id, session = app.sessions.find(request)
    if session.pending_user is None:
        return redirect(request, session_id, "/login")
    factors = [f for f in await app.otp.list_factors(session.pending_user) if f.status == "active"]
    body = error(message)
    if not session.sms_blocked:
        body += form("/sms/start", session.csrf, "", "Text me a code")
    if factors:
        body += "<h2>Or use your authenticator app</h2>" + form(
            "/totp", session.csrf, code_field(), "Verify"
        )
        body += '<p><a href="/recovery" id="use-recovery">Use a recovery code</a></p>'
    return answer(request, session_id, page("Second step", body))


@post("/sms/start", status_code=200)
async def sms_start(request: Request[Any, Any, Any], data: Form) -> Response[Any]:
    session_id, session = checked(request, data)
    app = app_of(request)
    if session.pending_user is None or session.sms_blocked:
        return redirect(request, session_id, "/login")
    user = app.users[session.pending_user]
    try:
        challenge = await app.otp.start_challenge(user.phone, client_ip=app.client_ip(request))
    except Refused as exc:
        return await second_factor(request, wait_message(exc))
    except OtpError:
        return await second_factor(request, "We could not send a code. Try again later.")
    session.challenge_id = challenge.challenge_id
    session_id, session = app.sessions.rotate(session_id, session)
    return redirect(request, session_id, "/sms")


@get("/sms")
async def sms_page_route(request: Request[Any, Any, Any]) -> Response[Any]:
    return await sms_page(request)


async def sms_page(request: Request[Any, Any, Any], message: str | None = None) -> Response[Any]:
    session_id, session = app_of(request).sessions.find(request)
    if session.pending_user is None or session.challenge_id is None:
        return redirect(request, session_id, "/login")
    body = "<p>We sent you a code by SMS.</p>" + error(message)
    body += form("/sms", session.csrf, code_field(), "Verify")
    return answer(request, session_id, page("Enter the code", body))


@post("/sms", status_code=200)
async def sms_verify(request: Request[Any, Any, Any], data: Form) -> Response[Any]:
    session_id, session = checked(request, data)
    app = app_of(request)
    # The challenge is the session's: the form's only field is the code.
    if session.pending_user is None or session.challenge_id is None:
        return redirect(request, session_id, "/login")
    try:
        await app.otp.verify(session.challenge_id, data.get("code", "").strip())
    except Refused as exc:
        return await sms_page(request, wait_message(exc))
    except OtpError:
        return await sms_page(request, WRONG_CODE)
    return logged_in(request, session_id, session, session.pending_user)


@post("/totp", status_code=200)
async def totp_verify(request: Request[Any, Any, Any], data: Form) -> Response[Any]:
    session_id, session = checked(request, data)
    app = app_of(request)
    if session.pending_user is None:
        return redirect(request, session_id, "/login")
    try:
        await app.otp.verify_totp(session.pending_user, data.get("code", "").strip())
    except SubjectLocked as exc:
        # The moment a guesser would switch to SMS: offer the recovery code only.
        session.sms_blocked = True
        return await second_factor(request, wait_message(exc))
    except Refused as exc:
        return await second_factor(request, wait_message(exc))
    except (IncorrectCode, CodeAlreadyUsed, InvalidCodeFormat, FactorNotFound):
        return await second_factor(request, WRONG_CODE)
    except OtpError:
        return await second_factor(request, "We could not check the code. Try again later.")
    return logged_in(request, session_id, session, session.pending_user)


@get("/recovery")
async def recovery_page_route(request: Request[Any, Any, Any]) -> Response[Any]:
    return await recovery_page(request)


async def recovery_page(
    request: Request[Any, Any, Any], message: str | None = None
) -> Response[Any]:
    session_id, session = app_of(request).sessions.find(request)
    if session.pending_user is None:
        return redirect(request, session_id, "/login")
    fields = '<label>Recovery code <input name="code" id="code" required></label><br>'
    body = error(message) + form("/recovery", session.csrf, fields, "Use it")
    return answer(request, session_id, page("Recovery code", body, no_store=True))


@post("/recovery", status_code=200)
async def recovery(request: Request[Any, Any, Any], data: Form) -> Response[Any]:
    session_id, session = checked(request, data)
    app = app_of(request)
    if session.pending_user is None:
        return redirect(request, session_id, "/login")
    try:
        await app.otp.use_recovery_code(session.pending_user, data.get("code", ""))
    except Refused as exc:
        return await recovery_page(request, wait_message(exc))
    except OtpError:
        return await recovery_page(request, WRONG_CODE)
    return logged_in(request, session_id, session, session.pending_user)


@get("/enrol")
async def enrol_page(request: Request[Any, Any, Any]) -> Response[Any]:
    app = app_of(request)
    session_id, session = app.sessions.find(request)
    if session.user is None:
        return redirect(request, session_id, "/login")
    enrolment = await app.otp.enrol_totp(session.user, session.user)
    session.challenge_id = enrolment.factor_id  # the factor being set up, never from the form
    body = (
        "<p>Scan this with your authenticator app, then type the code it shows.</p>"
        f'<div id="qr">{enrolment.qr_svg.split("?>", 1)[-1]}</div>'
        f'<p><a id="otpauth" href="{html.escape(enrolment.otpauth_uri)}">Open in an app on '
        "this device</a></p>" + form("/enrol", session.csrf, code_field(), "Activate")
    )
    return answer(request, session_id, page("Set up an authenticator app", body, no_store=True))


@post("/enrol", status_code=200)
async def enrol(request: Request[Any, Any, Any], data: Form) -> Response[Any]:
    session_id, session = checked(request, data)
    app = app_of(request)
    if session.user is None or session.challenge_id is None:
        return redirect(request, session_id, "/login")
    try:
        activation = await app.otp.activate_totp(session.challenge_id, data.get("code", "").strip())
    except OtpError:
        body = error(WRONG_CODE) + '<p><a href="/enrol">Start again</a></p>'
        return answer(request, session_id, page("Set up an authenticator app", body, no_store=True))
    session.challenge_id = None
    codes = "".join(f"<li><code>{html.escape(c)}</code></li>" for c in activation.recovery_codes)
    body = (
        "<p>Your authenticator app is set up. Keep these recovery codes somewhere safe: each "
        "works once, and they are shown only now.</p>"
        f'<ul id="recovery-codes">{codes}</ul><p><a href="/" id="done">Done</a></p>'
    )
    return answer(request, session_id, page("Recovery codes", body, no_store=True))


@post("/logout", status_code=200)
async def logout(request: Request[Any, Any, Any], data: Form) -> Response[Any]:
    session_id, _ = checked(request, data)
    new_id, _ = app_of(request).sessions.rotate(session_id, Session())
    return redirect(request, new_id, "/login")


def create_app(settings: Settings | None = None, otp: AsyncOtpClient | None = None) -> Litestar:
    """The login app (``otp``: a client to use instead of one built from the settings)."""
    settings = settings or Settings.from_environment()
    client = otp or AsyncOtpClient(settings.otp_url, settings.otp_token)
    app = Litestar(
        route_handlers=[
            healthz,
            otp_events,
            home,
            login_page_route,
            login,
            second_factor_route,
            sms_start,
            sms_page_route,
            sms_verify,
            totp_verify,
            recovery_page_route,
            recovery,
            enrol_page,
            enrol,
            logout,
        ],
        exception_handlers={_Forbidden: forbidden},
        on_shutdown=[client.aclose],
        openapi_config=None,
    )
    app.state.login = LoginApp(settings, client)
    return app
