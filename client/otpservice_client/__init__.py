"""A typed client for otpservice: ``OtpClient`` (blocking) and ``AsyncOtpClient``.

Every problem code is an exception under ``OtpError`` (``otpservice_client.errors`` draws the
tree); answers are ``msgspec`` Structs (``otpservice_client.models``).
"""

from __future__ import annotations

from otpservice_client import errors, models
from otpservice_client._requests import RetryPolicy
from otpservice_client.client import AsyncOtpClient, OtpClient
from otpservice_client.errors import OtpError

__all__ = ["AsyncOtpClient", "OtpClient", "OtpError", "RetryPolicy", "errors", "models"]
