"""The circuit breaker on its own, with a clock the test moves."""

from __future__ import annotations

from otpservice.sms.chain import CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_breaker_opens_after_consecutive_failures_and_lets_one_trial_through_later() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=3, open_seconds=30, clock=clock)
    for _ in range(2):
        breaker.failed()
    assert breaker.allows()
    breaker.succeeded()  # a success resets the count
    for _ in range(3):
        breaker.failed()
    assert not breaker.allows()
    assert breaker.retry_after() == 30
    clock.now += 30
    assert breaker.allows()  # one trial
    assert not breaker.allows()  # and only one, until it answers
    breaker.failed()
    clock.now += 29
    assert not breaker.allows()
    clock.now += 1
    assert breaker.allows()
    breaker.succeeded()
    assert breaker.allows()
    assert breaker.retry_after() == 0
