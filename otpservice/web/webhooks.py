"""Provider webhooks: delivery reports and replies from ACS (through Event Grid) and Twilio.

They are public routes (no bearer token), each authenticated the way its provider can be:
Event Grid signs nothing, so it must send a shared secret (the ``X-Webhook-Secret`` delivery
header, preferred, or a ``secret`` query parameter); Twilio signs every request
(``X-Twilio-Signature`` over the URL it called and the form fields). A request that fails
that check changes nothing and gets 401 or 403.
"""

from __future__ import annotations

import hmac
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from litestar import Request, Response, post, route

from otpservice.config.schema import TwilioProvider
from otpservice.errors import Forbidden, InvalidInput, Unauthorized
from otpservice.models import DeliveryReport, InboundSms
from otpservice.sms import acs, twilio
from otpservice.web.context import otp_service, services
from otpservice.web.openapi import documented

if TYPE_CHECKING:
    from otpservice.config.schema import Settings

log = logging.getLogger(__name__)

_PUBLIC = {"public": True}


class WebhookAuth:
    """The secrets that authenticate provider webhooks, from the settings."""

    def __init__(self, settings: Settings) -> None:
        self.acs_secret = settings.secrets.acs_webhook_secret
        self.public_base_url = (settings.public_base_url or "").rstrip("/")
        self.twilio = {
            p.account_sid: p for p in settings.sms.providers if isinstance(p, TwilioProvider)
        }

    def check_acs(self, request: Request[Any, Any, Any]) -> None:
        """Require the shared secret Event Grid was told to send.

        Raises:
            Unauthorized: missing, wrong, or no secret configured.
        """
        sent = request.headers.get("x-webhook-secret") or request.query_params.get("secret")
        if not self.acs_secret or not sent:
            raise Unauthorized("send the webhook secret in the X-Webhook-Secret header")
        if not hmac.compare_digest(sent.encode("utf-8", "replace"), self.acs_secret.encode()):
            raise Unauthorized("the webhook secret is not valid")

    def check_twilio(
        self, request: Request[Any, Any, Any], form: list[tuple[str, str]]
    ) -> TwilioProvider:
        """The Twilio provider whose auth token signed this request.

        Raises:
            Forbidden: unsigned, wrongly signed, an unknown account, or no public_base_url to
            rebuild the signed URL from.
        """
        account = next((value for name, value in form if name == "AccountSid"), "")
        provider = self.twilio.get(account)
        received = request.headers.get("x-twilio-signature", "")
        if provider is None or not received or not self.public_base_url:
            raise Forbidden("the request is not signed by a configured Twilio account")
        query = request.scope.get("query_string", b"").decode()
        url = f"{self.public_base_url}{request.url.path}" + (f"?{query}" if query else "")
        if not twilio.signature_is_valid(url, form, received, provider.auth_token):
            raise Forbidden("the X-Twilio-Signature does not match")
        return provider


def webhook_auth(request: Request[Any, Any, Any]) -> WebhookAuth:
    """The ``WebhookAuth`` ``create_app`` put on the app's state."""
    auth: WebhookAuth = request.app.state.webhook_auth
    return auth


@post(
    "/webhooks/acs",
    status_code=200,
    summary="ACS events (Event Grid): delivery reports and inbound SMS",
    **documented(
        "public", "invalid_request", "unauthorized", "request_too_large", "store_unavailable"
    ),
)
async def acs_events(request: Request[Any, Any, Any]) -> Response[Any]:
    """Event Grid deliveries, in the Event Grid or the CloudEvents schema; also answers Event
    Grid's subscription validation."""
    webhook_auth(request).check_acs(request)
    try:
        events = acs.parse_events(await request.body())
    except ValueError as exc:
        raise InvalidInput(f"not an Event Grid delivery: {exc}") from None
    otp = otp_service(request)
    for event in events:
        if event.type == acs.SUBSCRIPTION_VALIDATION:
            return Response({"validationResponse": str(event.data.get("validationcode", ""))})
        inbound = acs.inbound_sms(event)
        if inbound is not None:
            await _reply_received(request, "acs", inbound)
            continue
        report = acs.delivery_report(event)
        if report is not None:
            await otp.record_report(
                report.challenge_id,
                report.status,
                report=DeliveryReport(
                    provider="", message_id=report.message_id, detail=report.detail
                ),
            )
    return Response(None, status_code=200)


@route("/webhooks/acs", http_method=["OPTIONS"], opt=_PUBLIC, include_in_schema=False)
async def acs_handshake(request: Request[Any, Any, Any]) -> Response[None]:
    """The CloudEvents abuse-protection handshake: allow the origin that asks."""
    origin = request.headers.get("webhook-request-origin", "")
    headers = {"Allow": "POST, OPTIONS"}
    if origin:
        headers |= {"WebHook-Allowed-Origin": origin, "WebHook-Allowed-Rate": "*"}
    return Response(None, status_code=200, headers=headers)


@post(
    twilio.STATUS_CALLBACK_PATH,
    status_code=204,
    summary="Twilio status callbacks",
    **documented(
        "public", "invalid_request", "forbidden", "request_too_large", "store_unavailable"
    ),
)
async def twilio_status(request: Request[Any, Any, Any]) -> None:
    """A message status from Twilio, for the challenge named in the callback URL."""
    form = parse_qsl((await request.body()).decode(errors="replace"), keep_blank_values=True)
    provider = webhook_auth(request).check_twilio(request, form)
    fields = dict(form)
    status = twilio.REPORTED_STATUS.get(fields.get("MessageStatus", ""))
    challenge_id = request.query_params.get("challenge_id")
    if status is None or not challenge_id:
        return  # queued, sending, accepted...: nothing a delivery state needs
    await otp_service(request).record_report(
        challenge_id,
        status,
        report=DeliveryReport(
            provider=provider.label,
            message_id=fields.get("MessageSid", ""),
            detail=f"error {fields['ErrorCode']}" if fields.get("ErrorCode") else "",
        ),
    )


@post(
    twilio.INBOUND_PATH,
    status_code=200,
    media_type="text/xml",
    summary="Twilio inbound messages (STOP, START, ...)",
    **documented("public", "forbidden", "request_too_large", "store_unavailable"),
)
async def twilio_inbound(request: Request[Any, Any, Any]) -> str:
    """A message a person sent to one of our Twilio numbers; answered with empty TwiML."""
    form = parse_qsl((await request.body()).decode(errors="replace"), keep_blank_values=True)
    account = webhook_auth(request).check_twilio(request, form).account_sid
    fields = dict(form)
    message = InboundSms(
        sender=fields.get("From", ""),
        recipient=fields.get("To", ""),
        body=fields.get("Body", ""),
        message_id=fields.get("MessageSid", ""),
    )
    await _reply_received(request, "twilio", message, account)
    return twilio.EMPTY_TWIML


async def _reply_received(
    request: Request[Any, Any, Any], kind: str, message: InboundSms, account: str | None = None
) -> None:
    """Hand a reply to the inbound handling. A sender that is no valid number (a short code)
    is skipped: answering the provider with an error would only make it retry."""
    inbound = services(request).inbound
    sender = inbound.sender(kind, message.recipient, account=account)
    try:
        await inbound.received(message, sender=sender)
    except InvalidInput:
        log.info("inbound SMS from a sender that is no E.164 number: ignored")


# The OPTIONS handler first: registered after the POST one, it would clash with the OPTIONS
# handler Litestar adds to every path that has none.
WEBHOOK_ROUTES = [acs_handshake, acs_events, twilio_status, twilio_inbound]
