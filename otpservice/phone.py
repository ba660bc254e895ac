"""Phone numbers: strict E.164 input validated with ``phonenumbers``, and masking for logs."""

from __future__ import annotations

import re
from dataclasses import dataclass

import phonenumbers

from otpservice.errors import InvalidInput

# Also the spec's pattern for phone fields (an ECMAScript regex there).
E164_PATTERN = r"^\+[1-9][0-9]{6,14}$"
_E164 = re.compile(E164_PATTERN)
_TYPE_NAMES = {
    value: name.lower()
    for name, value in vars(phonenumbers.PhoneNumberType).items()
    if name.isupper() and isinstance(value, int)
}


@dataclass(frozen=True, slots=True)
class PhoneNumber:
    """A valid number in E.164 form, with its country calling code."""

    e164: str
    country_code: int
    # ISO 3166 region ("GB"; "001" for non-geographic numbers) and the type phonenumbers
    # gives the number ("mobile", "premium_rate", ...): what the geo permissions look at.
    region: str = ""
    number_type: str = "unknown"

    def prefix(self, national_digits: int) -> str:
        """The calling code and the first ``national_digits`` digits after it ("+4470")."""
        return self.e164[: len(str(self.country_code)) + 1 + national_digits]

    def masked(self) -> str:
        """The number with all but the country code and last two digits hidden."""
        prefix = f"+{self.country_code}"
        hidden = len(self.e164) - len(prefix) - 2
        return f"{prefix}{'*' * hidden}{self.e164[-2:]}"


def parse_phone(raw: str) -> PhoneNumber:
    """Validate an E.164 number (``+`` then digits, nothing else).

    Raises:
        InvalidInput: ``invalid_phone`` when the text is not a valid, dialable E.164 number.
    """
    if not _E164.fullmatch(raw):
        raise InvalidInput(
            "phone must be in E.164 form: '+', country code and number, digits only",
            code="invalid_phone",
        )
    try:
        parsed = phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException as exc:
        raise InvalidInput(f"phone is not a valid number: {exc}", code="invalid_phone") from exc
    # number_type is UNKNOWN exactly when is_valid_number is False (both match the number
    # against its own region's patterns), so one call validates and classifies.
    kind = phonenumbers.number_type(parsed)
    if kind == phonenumbers.PhoneNumberType.UNKNOWN:
        raise InvalidInput("phone is not a valid number for its country", code="invalid_phone")
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    return PhoneNumber(
        e164=e164,
        country_code=parsed.country_code or 0,
        region=phonenumbers.region_code_for_number(parsed) or "",
        number_type=_TYPE_NAMES.get(kind, "unknown"),
    )


def calling_code_of(prefix: str) -> str | None:
    """The calling code a number prefix ("+4474") starts with ("+44"), or None if none does
    (calling codes are prefix-free, so at most one does)."""
    for length in (1, 2, 3):
        code = prefix[1 : 1 + length]
        if code.isdigit() and int(code) in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            return f"+{code}"
    return None


# Dots are left out: they would take in IP addresses and versions, which are no phone numbers.
_ANY_NUMBER = re.compile(r"\+?[0-9][0-9 ()-]{5,}[0-9]")


def mask_numbers(text: str) -> str:
    """Hide all but the last two digits of anything in ``text`` that looks like a phone number."""

    def _mask(match: re.Match[str]) -> str:
        digits = re.sub(r"[^0-9]", "", match.group())
        return (
            f"{'+' if match.group().startswith('+') else ''}{'*' * (len(digits) - 2)}{digits[-2:]}"
        )

    return _ANY_NUMBER.sub(_mask, text)
