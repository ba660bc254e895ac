from __future__ import annotations

import pytest

from otpservice.errors import InvalidInput
from otpservice.phone import mask_numbers, parse_phone


def test_valid_number_is_kept_in_e164_with_its_country_code() -> None:
    number = parse_phone("+447911123456")
    assert (number.e164, number.country_code) == ("+447911123456", 44)


@pytest.mark.parametrize(
    "raw",
    [
        "14155550123",  # no plus
        "+1 415 555 0123",  # spaces
        "+1-415-555-0123",
        "+0123456789",
        "+1415555012",  # too short for the US
        "+999123456789",  # no such country
        "+１４１５５５５０１２３",  # full-width digits
        "",
        "+1415555012345678",
    ],
)
def test_anything_but_a_valid_e164_number_is_refused(raw: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_phone(raw)
    assert caught.value.code == "invalid_phone"


def test_masked_number_shows_only_country_code_and_last_two_digits() -> None:
    assert parse_phone("+447911123456").masked() == "+44********56"


def test_numbers_inside_log_text_are_masked() -> None:
    text = mask_numbers("sent to +14155550123 and 020 7946 0958 ok")
    assert mask_numbers("listening on 127.0.0.1:8080") == "listening on 127.0.0.1:8080"
    assert "4155550123" not in text
    assert "7946" not in text
    assert text.startswith("sent to +*********23 and")
