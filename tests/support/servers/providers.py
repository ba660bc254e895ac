"""Local HTTP servers that behave like the SMS providers' send endpoints.

Each one checks a request the way the real provider does (its signature or credentials, its
body shape and headers) and answers with what a test planned: accept, 429 with Retry-After,
500, a per-recipient refusal, or a late answer (the client times out, the provider keeps the
message, as a real one would). Every request that passed the checks is recorded; a request
that failed them gets the provider's 401 and is recorded as ``refused``.

The checks are written here from the providers' documentation (``shared/reference``), not
with otpservice's own code, so a signing bug in otpservice fails the tests.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

# An HTTP answer: status, headers, body.
Answer = tuple[int, dict[str, str], bytes]


@dataclass
class Planned:
    """One planned answer: ``kind`` is accept, busy (429), error (500), refuse or late."""

    kind: str = "accept"
    retry_after: str | None = None
    # For refuse: the provider's error (Twilio code, or ACS per-recipient status).
    error_code: int = 400
    # For late: seconds to wait before answering.
    delay: float = 1.0


@dataclass
class Received:
    """A request that passed the provider's checks."""

    to: str
    body: str
    fields: dict[str, Any]
    headers: dict[str, str]
    at: float = field(default_factory=time.monotonic)


@dataclass
class FakeProvider:
    """A provider on a free loopback port; subclasses check and answer requests."""

    plan: list[Planned] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    # Messages a phone would get: accepted and late ones (a late answer still sent it).
    delivered: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()

    def next_answer(self) -> Planned:
        """The next planned answer (accept once the plan is used up)."""
        with self._lock:
            return self.plan.pop(0) if self.plan else Planned()

    def record(self, received: Received, delivered: bool) -> None:
        with self._lock:
            self.received.append(received)
            if delivered:
                self.delivered.append(received)

    def handle(self, request: BaseHTTPRequestHandler, body: bytes) -> Answer:
        """Check and answer one POST: (status, headers, body)."""
        raise NotImplementedError

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                status, headers, payload = provider.handle(self, body)
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a planned late answer)

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Handler

    def answer(self, planned: Planned, received: Received, accepted: tuple[int, bytes]) -> Answer:
        """The planned answer for a request that passed the checks."""
        json_type = {"Content-Type": "application/json"}
        if planned.kind == "busy":
            self.record(received, delivered=False)
            headers = {
                **json_type,
                **({"Retry-After": planned.retry_after} if planned.retry_after else {}),
            }
            return 429, headers, b'{"code": 20429, "message": "Too Many Requests"}'
        if planned.kind == "error":
            self.record(received, delivered=False)
            return 500, json_type, b'{"message": "internal error"}'
        if planned.kind == "late":
            self.record(received, delivered=True)
            time.sleep(planned.delay)
            return accepted[0], json_type, accepted[1]
        if planned.kind == "refuse":
            self.record(received, delivered=False)
            return self.refusal(planned)
        self.record(received, delivered=True)
        return accepted[0], json_type, accepted[1]

    def refusal(self, planned: Planned) -> Answer:
        return 400, {"Content-Type": "application/json"}, b"{}"

    def refuse(self, why: str) -> Answer:
        with self._lock:
            self.refused.append(why)
        return 401, {"Content-Type": "application/json"}, json.dumps({"error": why}).encode()


ACS_KEY = base64.b64encode(b"acs-test-access-key-0123456789ab").decode()


class FakeAcs(FakeProvider):
    """``POST /sms?api-version=2021-03-07`` with HMAC-SHA256 access-key signing.

    A repeated ``repeatabilityRequestId`` is not delivered again: it gets the first answer's
    message id, as ACS repeatability promises.
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        self.repeats: dict[str, str] = {}

    @property
    def connection_string(self) -> str:
        return f"endpoint={self.url}/;accesskey={ACS_KEY}"

    def handle(self, request: BaseHTTPRequestHandler, body: bytes) -> Answer:
        headers = {k.lower(): v for k, v in request.headers.items()}
        if request.path != "/sms?api-version=2021-03-07":
            return self.refuse(f"path {request.path}")
        date = headers.get("x-ms-date", "")
        try:
            sent_at = email.utils.parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError):
            return self.refuse("x-ms-date missing or not RFC 1123")
        if abs(time.time() - sent_at) > 900:
            return self.refuse("x-ms-date too far from now")
        content_hash = base64.b64encode(hashlib.sha256(body).digest()).decode()
        if headers.get("x-ms-content-sha256") != content_hash:
            return self.refuse("Request 'x-ms-content-sha256' differs from generated content hash.")
        host = urlsplit(self.url).netloc
        to_sign = f"POST\n{request.path}\n{date};{host};{content_hash}"
        signature = base64.b64encode(
            hmac.new(base64.b64decode(ACS_KEY), to_sign.encode(), hashlib.sha256).digest()
        ).decode()
        expected = (
            f"HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature={signature}"
        )
        if not hmac.compare_digest(headers.get("authorization", ""), expected):
            return self.refuse("signature")
        data = json.loads(body)
        recipient = data["smsRecipients"][0]
        assert set(data) == {"from", "smsRecipients", "message", "smsSendOptions"}, data
        assert data["from"].startswith("+"), data
        assert len(data["smsRecipients"]) == 1
        uuid.UUID(recipient["repeatabilityRequestId"])
        email.utils.parsedate_to_datetime(recipient["repeatabilityFirstSent"])
        # A code's message asks for a report, tagged with its challenge; a keyword answer not.
        options = data["smsSendOptions"]
        assert options["enableDeliveryReport"] is bool(options.get("tag")), options
        received = Received(recipient["to"], data["message"], data, headers)
        repeat_id = recipient["repeatabilityRequestId"]
        if repeat_id in self.repeats:
            # A repeat: same answer, nothing delivered twice.
            self.record(received, delivered=False)
            return (
                202,
                {"Content-Type": "application/json"},
                self._result(recipient["to"], self.repeats[repeat_id]),
            )
        message_id = f"Outgoing_{uuid.uuid4()}_noam"
        planned = self.next_answer()
        if planned.kind in ("accept", "late"):
            self.repeats[repeat_id] = message_id
        return self.answer(planned, received, (202, self._result(recipient["to"], message_id)))

    def _result(self, to: str, message_id: str) -> bytes:
        return json.dumps(
            {
                "value": [
                    {"to": to, "messageId": message_id, "httpStatusCode": 202, "successful": True}
                ]
            }
        ).encode()

    def refusal(self, planned: Planned) -> Answer:
        # HTTP 202 for the request, a failed recipient inside.
        item = {
            "to": "",
            "httpStatusCode": planned.error_code,
            "successful": False,
            "errorMessage": "Invalid To phone number format.",
        }
        return 202, {"Content-Type": "application/json"}, json.dumps({"value": [item]}).encode()


TWILIO_SID = "AC" + "0" * 31 + "1"
TWILIO_TOKEN = "twilio-test-auth-token-0123456789"


class FakeTwilio(FakeProvider):
    """``POST /2010-04-01/Accounts/{sid}/Messages.json``, HTTP Basic auth, form body."""

    def handle(self, request: BaseHTTPRequestHandler, body: bytes) -> Answer:
        headers = {k.lower(): v for k, v in request.headers.items()}
        if request.path != f"/2010-04-01/Accounts/{TWILIO_SID}/Messages.json":
            return self.refuse(f"path {request.path}")
        credentials = base64.b64encode(f"{TWILIO_SID}:{TWILIO_TOKEN}".encode()).decode()
        if headers.get("authorization") != f"Basic {credentials}":
            return self.refuse("credentials")
        if headers.get("content-type") != "application/x-www-form-urlencoded":
            return self.refuse("content type")
        form = {k: v[0] for k, v in parse_qs(body.decode(), strict_parsing=True).items()}
        assert {"To", "Body"} <= form.keys(), form
        assert ("From" in form) != ("MessagingServiceSid" in form), form
        received = Received(form["To"], form["Body"], form, headers)
        sid = "SM" + uuid.uuid4().hex
        accepted = json.dumps({"sid": sid, "status": "queued", "to": form["To"]}).encode()
        return self.answer(self.next_answer(), received, (201, accepted))

    def refusal(self, planned: Planned) -> Answer:
        error = {"code": planned.error_code, "message": "refused", "status": 400}
        return 400, {"Content-Type": "application/json"}, json.dumps(error).encode()


GATEWAY_SECRET = "whsec_" + base64.b64encode(b"gateway-test-secret-0123456789ab").decode()


class FakeGateway(FakeProvider):
    """Any JSON endpoint that checks Standard Webhooks signatures, and drops a repeated
    ``webhook-id`` (a gateway configured with ``deduplicates = true``)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.seen: set[str] = set()

    def handle(self, request: BaseHTTPRequestHandler, body: bytes) -> Answer:
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            data = Webhook(GATEWAY_SECRET).verify(body, headers)
        except WebhookVerificationError as exc:
            return self.refuse(str(exc))
        assert data["id"] == headers["webhook-id"]
        received = Received(data["to"], data["body"], data, headers)
        accepted = (200, json.dumps({"id": "gw-" + data["id"][:8]}).encode())
        with self._lock:
            repeat = data["id"] in self.seen
            self.seen.add(data["id"])
        if repeat:
            self.record(received, delivered=False)
            return 200, {"Content-Type": "application/json"}, accepted[1]
        return self.answer(self.next_answer(), received, accepted)


EVENTS_SECRET = "whsec_" + base64.b64encode(b"app-events-test-secret-0123456789").decode()


class FakeApp(FakeProvider):
    """The login app's callback endpoint: checks the Standard Webhooks signature of events."""

    def handle(self, request: BaseHTTPRequestHandler, body: bytes) -> Answer:
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            data = Webhook(EVENTS_SECRET).verify(body, headers)
        except WebhookVerificationError as exc:
            return self.refuse(str(exc))
        received = Received(data["data"].get("challenge_id", ""), data["type"], data, headers)
        return self.answer(self.next_answer(), received, (204, b""))
