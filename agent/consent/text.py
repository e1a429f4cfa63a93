"""What a technician wrote, made safe to show on the device user's screen (pure, no Tk).

The technician's name and reason come from the server and end up in the consent prompt and
the indicator. Newlines there once pushed Allow/Deny out of the window and could fake lines of
the prompt's own text ("This request comes from your IT department"); bidi overrides and
zero-width characters can disguise text too. So whatever is shown is one line: control, format
and separator characters become spaces, blanks collapse, stacked combining marks are capped,
and a long text is cut with an ellipsis.
"""

from __future__ import annotations

import unicodedata

#: Characters of the technician's reason shown in the prompt.
REASON_MAX = 120
#: Characters of the technician's name shown in the prompt and the indicator.
NAME_MAX = 40
#: Combining marks kept after one base character (more only stack upwards, "Zalgo" text).
MAX_MARKS = 2
ELLIPSIS = "…"


def _blank(ch: str) -> bool:
    """Control (Cc), format (Cf: bidi overrides, zero-width), surrogate, private, unassigned, or a separator."""
    return ch != " " and unicodedata.category(ch)[0] in "CZ"


def one_line(text: str, limit: int) -> str:
    """``text`` as one printable line of at most ``limit`` characters (a cut ends in ``…``)."""
    out: list[str] = []
    marks = 0
    for ch in text:
        if _blank(ch) or ch == " ":
            if out and out[-1] != " ":
                out.append(" ")
            marks = 0
            continue
        if unicodedata.category(ch).startswith("M"):
            marks += 1
            if marks > MAX_MARKS:
                continue
        else:
            marks = 0
        out.append(ch)
    line = "".join(out).strip()
    if len(line) > limit:
        line = line[: max(0, limit - 1)].rstrip() + ELLIPSIS
    return line
