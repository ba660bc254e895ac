"""``OtpClient`` and ``AsyncOtpClient``: every ``otp``-scope route of otpservice, typed.

Admin routes (opt-outs, analytics, the fraud guard, erasure) are out of scope: call them with
plain HTTP from an operator's tool.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from otpservice_client._requests import Call, Calls, RetryPolicy, retry_delay

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from otpservice_client.models import (
        Activation,
        Approval,
        Challenge,
        ChallengeState,
        Enrolment,
        Factor,
        FactorRemoved,
        RecoveryApproval,
        TotpApproval,
    )

T = TypeVar("T")


def _headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


class _Retries:
    """The retry loop's bookkeeping: which retry this is, and the time budget."""

    def __init__(self, policy: RetryPolicy, clock: Callable[[], float]) -> None:
        self._policy = policy
        self._clock = clock
        self._started = clock()
        self.retries = 0

    def delay(self, call: Call[Any], outcome: httpx.Response | Exception) -> float | None:
        """How long to wait before trying again, or None to give up with ``outcome``."""
        self.retries += 1
        delay = retry_delay(call, outcome, self._policy, self.retries)
        if delay is None or self._clock() - self._started + delay > self._policy.total_seconds:
            return None
        return delay


class OtpClient:
    """A blocking client (``httpx.Client``); ``transport`` replaces the network (tests)."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = 5.0,
        transport: httpx.BaseTransport | None = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = httpx.Client(
            base_url=base_url, headers=_headers(token), timeout=timeout, transport=transport
        )
        self._policy = retry or RetryPolicy()
        self._sleep = sleep
        self._clock = clock

    def __enter__(self) -> OtpClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def _send(self, call: Call[T]) -> T:
        retries = _Retries(self._policy, self._clock)
        while True:
            try:
                response = self._http.send(call.request(self._http))
            except httpx.TransportError as exc:
                delay = retries.delay(call, exc)
                if delay is None:
                    raise
            else:
                delay = retries.delay(call, response)
                if delay is None:
                    return call.read(response)
            self._sleep(delay)

    def start_challenge(
        self,
        phone: str,
        *,
        purpose: str = "login",
        locale: str | None = None,
        client_ip: str | None = None,
        idempotency_key: str | None = None,
    ) -> Challenge:
        """Send a code to ``phone`` (E.164). Always keyed (a key is made when none is given), so
        the retries of connection errors, read timeouts, 503s and a key in use never send a
        second SMS; never retried on a 429 or another 4xx."""
        return self._send(
            Calls.start_challenge(
                phone,
                purpose=purpose,
                locale=locale,
                client_ip=client_ip,
                idempotency_key=idempotency_key,
            )
        )

    def verify(self, challenge_id: str, code: str) -> Approval:
        """Check the code the user typed; a problem (``IncorrectCode``, ...) otherwise."""
        return self._send(Calls.verify(challenge_id, code))

    def get_challenge(self, challenge_id: str) -> ChallengeState:
        """A challenge's status, attempts left and delivery."""
        return self._send(Calls.get_challenge(challenge_id))

    def cancel_challenge(self, challenge_id: str) -> ChallengeState:
        """Cancel a pending challenge: its code stops working."""
        return self._send(Calls.cancel_challenge(challenge_id))

    def enrol_totp(self, subject: str, label: str) -> Enrolment:
        """A pending authenticator-app factor for ``subject`` (your user id)."""
        return self._send(Calls.enrol_totp(subject, label))

    def activate_totp(
        self, factor_id: str, code: str, *, current_code: str | None = None
    ) -> Activation:
        """Activate with the first code; ``current_code`` when it replaces an active factor."""
        return self._send(Calls.activate_totp(factor_id, code, current_code))

    def verify_totp(self, subject: str, code: str) -> TotpApproval:
        """Check an authenticator code: each step approves once."""
        return self._send(Calls.verify_totp(subject, code))

    def use_recovery_code(self, subject: str, code: str) -> RecoveryApproval:
        """Approve with a recovery code, which is then used up."""
        return self._send(Calls.use_recovery_code(subject, code))

    def regenerate_recovery_codes(self, factor_id: str) -> list[str]:
        """A new set of recovery codes; the old set stops working."""
        return self._send(Calls.regenerate_recovery_codes(factor_id)).recovery_codes

    def list_factors(self, subject: str) -> list[Factor]:
        """The subject's factors (no secrets)."""
        return self._send(Calls.list_factors(subject)).items

    def remove_factor(self, factor_id: str) -> FactorRemoved:
        """Remove a factor, active or pending."""
        return self._send(Calls.remove_factor(factor_id))


class AsyncOtpClient:
    """The same calls on ``httpx.AsyncClient``, for async login apps."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url, headers=_headers(token), timeout=timeout, transport=transport
        )
        self._policy = retry or RetryPolicy()
        self._sleep = sleep
        self._clock = clock

    async def __aenter__(self) -> AsyncOtpClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def _send(self, call: Call[T]) -> T:
        retries = _Retries(self._policy, self._clock)
        while True:
            try:
                response = await self._http.send(call.request(self._http))
            except httpx.TransportError as exc:
                delay = retries.delay(call, exc)
                if delay is None:
                    raise
            else:
                delay = retries.delay(call, response)
                if delay is None:
                    return call.read(response)
            await self._sleep(delay)

    async def start_challenge(
        self,
        phone: str,
        *,
        purpose: str = "login",
        locale: str | None = None,
        client_ip: str | None = None,
        idempotency_key: str | None = None,
    ) -> Challenge:
        """As ``OtpClient.start_challenge``."""
        return await self._send(
            Calls.start_challenge(
                phone,
                purpose=purpose,
                locale=locale,
                client_ip=client_ip,
                idempotency_key=idempotency_key,
            )
        )

    async def verify(self, challenge_id: str, code: str) -> Approval:
        """As ``OtpClient.verify``."""
        return await self._send(Calls.verify(challenge_id, code))

    async def get_challenge(self, challenge_id: str) -> ChallengeState:
        """As ``OtpClient.get_challenge``."""
        return await self._send(Calls.get_challenge(challenge_id))

    async def cancel_challenge(self, challenge_id: str) -> ChallengeState:
        """As ``OtpClient.cancel_challenge``."""
        return await self._send(Calls.cancel_challenge(challenge_id))

    async def enrol_totp(self, subject: str, label: str) -> Enrolment:
        """As ``OtpClient.enrol_totp``."""
        return await self._send(Calls.enrol_totp(subject, label))

    async def activate_totp(
        self, factor_id: str, code: str, *, current_code: str | None = None
    ) -> Activation:
        """As ``OtpClient.activate_totp``."""
        return await self._send(Calls.activate_totp(factor_id, code, current_code))

    async def verify_totp(self, subject: str, code: str) -> TotpApproval:
        """As ``OtpClient.verify_totp``."""
        return await self._send(Calls.verify_totp(subject, code))

    async def use_recovery_code(self, subject: str, code: str) -> RecoveryApproval:
        """As ``OtpClient.use_recovery_code``."""
        return await self._send(Calls.use_recovery_code(subject, code))

    async def regenerate_recovery_codes(self, factor_id: str) -> list[str]:
        """As ``OtpClient.regenerate_recovery_codes``."""
        return (await self._send(Calls.regenerate_recovery_codes(factor_id))).recovery_codes

    async def list_factors(self, subject: str) -> list[Factor]:
        """As ``OtpClient.list_factors``."""
        return (await self._send(Calls.list_factors(subject))).items

    async def remove_factor(self, factor_id: str) -> FactorRemoved:
        """As ``OtpClient.remove_factor``."""
        return await self._send(Calls.remove_factor(factor_id))
