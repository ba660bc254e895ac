"""What each call sends and how its answer is read and retried: shared by both clients, so the
sync and async ones cannot drift apart."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import quote

import httpx
import msgspec

from otpservice_client.errors import OtpError, error_from
from otpservice_client.models import (
    Activation,
    Approval,
    Challenge,
    ChallengeState,
    Enrolment,
    FactorList,
    FactorRemoved,
    RecoveryApproval,
    RecoveryCodes,
    TotpApproval,
)

T = TypeVar("T")
# "start": retried on connection errors, read timeouts, 503 and 409 idempotency_key_in_use,
# always with its Idempotency-Key; "once": retried only when the request was never sent.
RetryKind = Literal["start", "once"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How ``start_challenge`` is retried (other calls: ``max_retries`` connection failures
    before anything was sent)."""

    max_retries: int = 3
    total_seconds: float = 10.0
    retry_after_cap_seconds: float = 5.0
    in_use_backoff_seconds: float = 0.5
    connection_backoff_seconds: float = 0.25


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One API call: its request, the type of its answer, and its retry rule."""

    method: str
    path: str
    answer: type[T]
    body: dict[str, Any] | None = None
    params: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    retry: RetryKind = "once"

    def request(self, client: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        """The request to send (built again for each try, with the same key and body)."""
        content = msgspec.json.encode(self.body) if self.body is not None else None
        headers = {**self.headers, **({"content-type": "application/json"} if content else {})}
        return client.build_request(
            self.method, self.path, content=content, params=self.params or None, headers=headers
        )

    def read(self, response: httpx.Response) -> T:
        """The answer, or the problem it is as an exception.

        Raises:
            OtpError: its subclass for the problem's ``code``.
        """
        if response.is_success:
            answer = msgspec.json.decode(response.content, type=self.answer)
            if isinstance(answer, Challenge) and response.headers.get("idempotent-replayed"):
                return msgspec.structs.replace(answer, replayed=True)
            return answer
        raise problem_of(response)


def problem_of(response: httpx.Response) -> OtpError:
    """The exception a non-2xx answer stands for."""
    try:
        problem = msgspec.json.decode(response.content)
    except msgspec.DecodeError:
        problem = None
    if not isinstance(problem, dict):
        return OtpError(response.status_code, "", response.text[:200], {})
    return error_from(response.status_code, problem)


def retry_delay(
    call: Call[Any], outcome: httpx.Response | Exception, policy: RetryPolicy, retry: int
) -> float | None:
    """How long to wait before retry number ``retry`` (1, 2, ...) of ``call`` after
    ``outcome``, or None when it must not be retried."""
    if retry > policy.max_retries:
        return None
    backoff = policy.connection_backoff_seconds * retry
    if isinstance(outcome, httpx.ConnectError | httpx.ConnectTimeout):
        return backoff  # never sent: safe to send for any call
    if call.retry != "start":
        return None
    if isinstance(outcome, httpx.ReadTimeout | httpx.NetworkError | httpx.RemoteProtocolError):
        return backoff  # perhaps sent: the Idempotency-Key makes sending again safe
    if isinstance(outcome, Exception):
        return None
    if outcome.status_code == 503:
        return min(_retry_after(outcome), policy.retry_after_cap_seconds)
    if outcome.status_code == 409 and problem_of(outcome).code == "idempotency_key_in_use":
        return policy.in_use_backoff_seconds
    return None


def _retry_after(response: httpx.Response) -> float:
    try:
        return max(0.0, float(response.headers.get("retry-after", "1")))
    except ValueError:
        return 1.0


def _id(text: str) -> str:
    return quote(text, safe="")


class Calls:
    """The calls of every ``otp``-scope route."""

    @staticmethod
    def start_challenge(
        phone: str,
        *,
        purpose: str,
        locale: str | None,
        client_ip: str | None,
        idempotency_key: str | None,
    ) -> Call[Challenge]:
        body: dict[str, Any] = {"phone": phone, "purpose": purpose}
        if locale is not None:
            body["locale"] = locale
        if client_ip is not None:
            body["client_ip"] = client_ip
        key = idempotency_key or str(uuid.uuid4())
        return Call(
            "POST", "/challenge", Challenge, body, headers={"Idempotency-Key": key}, retry="start"
        )

    @staticmethod
    def verify(challenge_id: str, code: str) -> Call[Approval]:
        return Call("POST", "/verify", Approval, {"challenge_id": challenge_id, "code": code})

    @staticmethod
    def get_challenge(challenge_id: str) -> Call[ChallengeState]:
        return Call("GET", f"/challenge/{_id(challenge_id)}", ChallengeState)

    @staticmethod
    def cancel_challenge(challenge_id: str) -> Call[ChallengeState]:
        return Call("DELETE", f"/challenge/{_id(challenge_id)}", ChallengeState)

    @staticmethod
    def enrol_totp(subject: str, label: str) -> Call[Enrolment]:
        return Call("POST", "/totp/factors", Enrolment, {"subject": subject, "label": label})

    @staticmethod
    def activate_totp(factor_id: str, code: str, current_code: str | None) -> Call[Activation]:
        body: dict[str, Any] = {"code": code}
        if current_code is not None:
            body["current_code"] = current_code
        return Call("POST", f"/totp/factors/{_id(factor_id)}/activate", Activation, body)

    @staticmethod
    def verify_totp(subject: str, code: str) -> Call[TotpApproval]:
        return Call("POST", "/totp/verify", TotpApproval, {"subject": subject, "code": code})

    @staticmethod
    def use_recovery_code(subject: str, code: str) -> Call[RecoveryApproval]:
        body = {"subject": subject, "code": code}
        return Call("POST", "/totp/recovery", RecoveryApproval, body)

    @staticmethod
    def regenerate_recovery_codes(factor_id: str) -> Call[RecoveryCodes]:
        return Call("POST", f"/totp/factors/{_id(factor_id)}/recovery-codes", RecoveryCodes)

    @staticmethod
    def list_factors(subject: str) -> Call[FactorList]:
        return Call("GET", "/totp/factors", FactorList, params={"subject": subject})

    @staticmethod
    def remove_factor(factor_id: str) -> Call[FactorRemoved]:
        return Call("DELETE", f"/totp/factors/{_id(factor_id)}", FactorRemoved)
