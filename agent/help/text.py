"""How a request reads to its user (the window's list, ``helpline help --list``); no Tk here."""

from __future__ import annotations

from ..consent.text import one_line
from . import wire

STATE_WORDS = {"sending": "sending…", "waiting": "waiting for a technician", "resolved": "resolved",
               "withdrawn": "withdrawn", "failed": "not sent: the server refused it"}


def status_line(view: wire.RequestView) -> str:
    number = f"#{view.number} " if view.number else ""
    state = f"claimed by {one_line(view.claimed_by, 60) or 'a technician'}" if view.state == "claimed" \
        else STATE_WORDS.get(view.state, view.state)
    line = f"{number}{one_line(view.summary, 60)} — {state}"
    if view.note:
        line += f" — “{one_line(view.note, 80)}”"
    return line
