"""Message text: placeholders, languages, segment length and autofill lines."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from otpservice.config.schema import Settings
from otpservice.errors import ConfigError
from otpservice.sms.templates import MessageTemplates, segments

Make = Callable[..., Settings]


def templates(make_settings: Make, **sms: Any) -> MessageTemplates:
    return MessageTemplates(make_settings(sms=sms))


def test_the_default_text_fits_one_gsm7_segment(make_settings: Make) -> None:
    text = templates(make_settings).render(None, "123456")
    assert text == "123456 is your otpservice code. It expires in 5 min."
    assert segments(text) == 1


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("€" * 80, 1),  # extension characters take two septets
        ("€" * 81, 2),
        ("é" * 160, 1),  # in the GSM-7 default alphabet
        ("ş" * 70, 1),  # not GSM-7: UCS-2, 70 a segment
        ("ş" * 71, 2),
        ("😀" * 35, 1),  # two UTF-16 units each
        ("😀" * 36, 2),
    ],
)
def test_segments_are_counted_the_way_carriers_count_them(text: str, count: int) -> None:
    assert segments(text) == count


def test_the_language_falls_back_from_region_to_language_to_default(make_settings: Make) -> None:
    message = templates(
        make_settings,
        templates={
            "en": "{code} is your code",
            "pt": "Seu código: {code}",
            "pt-BR": "Código {code}",
        },
    )
    assert message.render("pt-BR", "123456") == "Código 123456"
    assert message.render("pt-PT", "123456") == "Seu código: 123456"
    assert message.render("de", "123456") == "123456 is your code"
    assert message.render(None, "123456") == "123456 is your code"


def test_autofill_lines_come_last_with_the_webotp_line_at_the_very_end(make_settings: Make) -> None:
    text = templates(
        make_settings, android_app_hash="FA+9qCX9VSu", webotp_domain="login.example.com"
    ).render(None, "123456")
    assert text.splitlines()[-3:] == ["", "FA+9qCX9VSu", "@login.example.com #123456"]


@pytest.mark.parametrize(
    ("sms", "message"),
    [
        ({"templates": {"en": "Code {code} for {user}"}}, r"sms\.templates\.en has unknown"),
        ({"templates": {"en": "Code {code.__class__}"}}, r"sms\.templates\.en has unknown"),
        ({"templates": {"en": "Code {code"}}, r"sms\.templates\.en is malformed"),
        ({"templates": {"en": "No code here"}}, r"sms\.templates\.en must contain"),
        ({"templates": {"en": "{code} " + "x" * 160}}, r"sms\.templates\.en takes 2 SMS segments"),
        ({"templates": {"de": "{code}"}}, r"sms\.default_locale 'en'"),
    ],
)
def test_bad_templates_are_refused_at_start_up(
    make_settings: Make, sms: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        make_settings(sms=sms)


def test_a_long_template_is_allowed_when_multipart_is_acknowledged(make_settings: Make) -> None:
    long = "{code} " + "x" * 160
    assert templates(make_settings, templates={"en": long}, allow_multipart=True)
