"""Request signing and parsing against the vectors in shared/reference/providers.md (§A.5, §D)."""

from __future__ import annotations

import httpx
import pytest

from otpservice.sms.acs import parse_connection_string, sign_request
from otpservice.sms.http import retry_after

SDK_DATE = "Wed, 13 Apr 2022 18:09:12 GMT"
SDK_HOST = "https://contoso.communicationservices.azure.com"


@pytest.mark.parametrize(
    ("path", "signature"),
    [
        ("/", "88MDmJhUR3m5QhFxb8ztShsSwlGrg7g/6XPnWf7QEO4="),
        ("/testPath", "RoCrHjw7fb9fpHSbqvRUY2xa8RBS0YvI1cxI1x8AS38="),
        ("/testPath?testQuery=yes", "il99+rd6V5O136roX/zVePCNle78HmvC4B7tu9zRH3I="),
    ],
)
def test_acs_signature_matches_the_sdk_test_vectors(path: str, signature: str) -> None:
    headers = sign_request("GET", f"{SDK_HOST}{path}", b"", "pw==", SDK_DATE)
    assert headers["x-ms-content-sha256"] == "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
    assert headers["Authorization"] == (
        f"HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature={signature}"
    )
    assert headers["x-ms-date"] == SDK_DATE


def test_acs_signature_of_a_send_covers_the_exact_body_bytes() -> None:
    body = (
        b'{"from":"+18005550100","smsRecipients":[{"to":"+14255550123","repeatabilityRequestId":'
        b'"3bd9e8a6-7c9e-4d3c-9a51-1f0c0b7f8e21","repeatabilityFirstSent":"Wed, 13 Apr 2022 '
        b'18:09:12 GMT"}],"message":"Your code is 123456","smsSendOptions":'
        b'{"enableDeliveryReport":true,"tag":"otp"}}'
    )
    endpoint, key = parse_connection_string(
        "endpoint=https://my-acs.communication.azure.com/;accesskey="
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
    )
    headers = sign_request("POST", f"{endpoint}/sms?api-version=2021-03-07", body, key, SDK_DATE)
    assert headers["x-ms-content-sha256"] == "tlG7aTuiqJp/yapIiXGvyNrpb7nm413I5Qn6RLsdZFI="
    assert headers["Authorization"].endswith(
        "&Signature=bXOn72/pk3O2ePnH7hlg8lQcckELoG/WC0IO3B2WBHo="
    )


def test_connection_string_keys_are_case_insensitive_and_keep_key_padding() -> None:
    assert parse_connection_string("Endpoint=https://x.example/;AccessKey=ab==") == (
        "https://x.example",
        "ab==",
    )


@pytest.mark.parametrize(
    "text", ["", "endpoint=https://x.example/", "accesskey=ab==", "endpoint=x;accesskey=y"]
)
def test_a_connection_string_without_endpoint_or_key_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="endpoint=https://"):
        parse_connection_string(text)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("7", 7.0), ("²", None), ("99999999", 3600.0), ("soon", None), ("", None)],
)
def test_retry_after_is_read_safely(value: str, seconds: float | None) -> None:
    response = httpx.Response(429, headers=[(b"Retry-After", value.encode("latin-1"))])
    assert retry_after(response) == seconds
