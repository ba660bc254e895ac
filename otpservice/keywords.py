"""Reply keywords, matched the way carriers match them: the whole message, trimmed, any case.

"stop" opts out, "Stop please" does not (carriers and Twilio do the same); a person who
writes more is relayed to the app as an ordinary message.
"""

from __future__ import annotations

import enum

OPT_OUT_WORDS = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT", "OPT OUT"}
)
OPT_IN_WORDS = frozenset({"START", "UNSTOP", "YES"})
HELP_WORDS = frozenset({"HELP", "INFO"})


class Keyword(enum.StrEnum):
    """What a reply asks for."""

    OPT_OUT = "opt_out"
    OPT_IN = "opt_in"
    HELP = "help"


def match_keyword(body: str, extra_opt_out: frozenset[str] = frozenset()) -> Keyword | None:
    """The keyword ``body`` is, if it is one (``extra_opt_out``: configured words, upper-case)."""
    word = " ".join(body.split()).upper()
    if word in OPT_OUT_WORDS or word in extra_opt_out:
        return Keyword.OPT_OUT
    if word in OPT_IN_WORDS:
        return Keyword.OPT_IN
    if word in HELP_WORDS:
        return Keyword.HELP
    return None
