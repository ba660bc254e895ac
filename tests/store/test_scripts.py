"""Which Redis failures become 503 store_unavailable, and which stay bugs."""

from __future__ import annotations

import pytest
from redis.exceptions import (
    AuthenticationError,
    ConnectionError,
    NoPermissionError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TimeoutError,
)

from otpservice.errors import StoreUnavailable
from otpservice.store.scripts import store_errors


@pytest.mark.parametrize(
    "error",
    [
        ConnectionError("refused"),
        TimeoutError("slow"),
        OutOfMemoryError("command not allowed when used memory > 'maxmemory'"),
        ReadOnlyError("You can't write against a read only replica."),
        ResponseError("MISCONF Redis is configured to save RDB snapshots, but it's failing"),
        ResponseError("BUSY Redis is busy running a script."),
        NoPermissionError("this user has no permissions to run the 'evalsha' command"),
        AuthenticationError("invalid username-password pair"),
    ],
)
def test_store_trouble_is_unavailable(error: Exception) -> None:
    with pytest.raises(StoreUnavailable), store_errors():
        raise error


@pytest.mark.parametrize(
    "reply",
    [
        "ERR Error running script: attempt to compare nil with number",
        "BUSYGROUP Consumer Group name already exists",  # an answer, not a busy server
    ],
)
def test_other_error_replies_are_not_hidden_as_unavailable(reply: str) -> None:
    with pytest.raises(ResponseError), store_errors():
        raise ResponseError(reply)
