"""The text of a code message, per language, checked at start-up.

Each template may use ``{code}``, ``{app_name}`` and ``{ttl_minutes}`` and must use ``{code}``.
At start-up every template is rendered with the longest values it can get, and refused when it
needs more than one SMS segment (a split code message costs double and may arrive in pieces)
unless ``sms.allow_multipart`` says so. Optional autofill lines go at the end: the Android SMS
Retriever app hash, then the WebOTP line ``@domain #code``, which must be last.
"""

from __future__ import annotations

import math
import string
from typing import TYPE_CHECKING

from otpservice.errors import ConfigError

if TYPE_CHECKING:
    from otpservice.config.schema import Settings

FIELDS = frozenset({"code", "app_name", "ttl_minutes"})

# GSM 03.38: the default alphabet (one septet each) and its extension table (two septets).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENDED = frozenset("^{}\\[~]|€\f")


def segments(text: str) -> int:
    """How many SMS segments ``text`` takes: GSM-7 when it can, else UCS-2."""
    if all(c in GSM7_BASIC or c in GSM7_EXTENDED for c in text):
        septets = sum(2 if c in GSM7_EXTENDED else 1 for c in text)
        return 1 if septets <= 160 else math.ceil(septets / 153)
    units = len(text.encode("utf-16-le")) // 2
    return 1 if units <= 70 else math.ceil(units / 67)


class MessageTemplates:
    """Renders the code message for a locale; construction checks every template.

    Raises:
        ConfigError: naming the template (``sms.templates.<locale>``) that is wrong.
    """

    def __init__(self, settings: Settings) -> None:
        sms = settings.sms
        self._templates = {locale.lower(): text for locale, text in sms.templates.items()}
        self._default = sms.default_locale.lower()
        self._app_name = sms.app_name
        self._ttl_minutes = max(1, settings.code.ttl_seconds // 60)
        self._app_hash = sms.android_app_hash
        self._webotp_domain = sms.webotp_domain
        for locale, text in sms.templates.items():
            where = f"sms.templates.{locale}"
            _check_fields(text, where)
            sample = self._render(text, "9" * settings.code.digits)
            if not sms.allow_multipart and segments(sample) > 1:
                raise ConfigError(
                    f"{where} takes {segments(sample)} SMS segments with the autofill lines "
                    "(at most 160 GSM-7 or 70 other characters); shorten it or set "
                    "sms.allow_multipart = true",
                    key=where,
                )

    def render(self, locale: str | None, code: str) -> str:
        """The message for ``locale`` ("pt-BR", then "pt", then the default)."""
        text = self._templates[self._default]
        if locale:
            wanted = locale.lower()
            text = self._templates.get(wanted, self._templates.get(wanted.split("-")[0], text))
        return self._render(text, code)

    def _render(self, template: str, code: str) -> str:
        lines = [template.format(code=code, app_name=self._app_name, ttl_minutes=self._ttl_minutes)]
        if self._app_hash or self._webotp_domain:
            lines.append("")
        if self._app_hash:
            lines.append(self._app_hash)
        if self._webotp_domain:
            lines.append(f"@{self._webotp_domain} #{code}")
        return "\n".join(lines)


def _check_fields(template: str, where: str) -> None:
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise ConfigError(f"{where} is malformed: {exc}", key=where) from exc
    unknown = fields - FIELDS
    if unknown:
        raise ConfigError(
            f"{where} has unknown placeholders {sorted(unknown)}; "
            f"use {', '.join('{' + f + '}' for f in sorted(FIELDS))}",
            key=where,
        )
    if "code" not in fields:
        raise ConfigError(f"{where} must contain {{code}}", key=where)
