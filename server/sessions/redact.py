"""What a recording may keep of the technician's side of a session: never what they typed.

A recording replays the device's screen; the technician's own messages are kept only where
they help to follow it. Pointer events stay as they are (positions and clicks say nothing
secret). Key events stay without the key — only that a key went down or up — because key
codes and typed text are exactly the passwords a technician types into a login prompt.
Everything else (``input.text``, acks, quality hints, anything undecodable, any binary) is
left out.
"""

from __future__ import annotations

import json

from protocol import stream

#: What a key event becomes in a recording.
_KEY_DOWN = json.dumps({"type": "input.key", "action": "down"}, separators=(",", ":"))
_KEY_UP = json.dumps({"type": "input.key", "action": "up"}, separators=(",", ":"))


def technician_record(binary: bool, data: str | bytes) -> str | None:
    """The recordable form of one technician → agent message, or None to leave it out."""
    if binary or not isinstance(data, str):
        return None
    try:
        message = stream.decode_text(data)
    except stream.StreamProtocolError:
        return None
    if isinstance(message, stream.InputMouse):
        return stream.encode_text(message)
    if isinstance(message, stream.InputKey):
        return _KEY_DOWN if message.action == "down" else _KEY_UP
    return None
