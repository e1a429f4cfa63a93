"""Messages of the support-code websocket (``wss://…:8444/api/v1/support/connect``, issue 18 part 4).

A device that is not enrolled has no certificate, so it has no control channel. It opens this
one websocket on the console port, sends :class:`SupportRedeem` first (the code is never in a
URL, so never in an access log), and gets :class:`SupportWelcome` or an ``error`` and a close.
After the welcome the socket carries only the one session's ``session.offer`` /
``session.answer`` / ``session.end`` (protocol.session) and ``error``; the screen itself goes
through the session tunnel like an enrolled agent's.

Rules for this file: no sockets, no asyncio, no clocks.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

import msgspec

from .messages import Id, Message, ShortStr

#: Digits only after the client strips spaces and dashes; 9..18 digits (the server's setting says how many).
CodeDigits = Annotated[str, msgspec.Meta(min_length=9, max_length=18, pattern=r"^[0-9]+$")]
#: Largest frame either side sends on the support websocket before the session (redeem, welcome, offer).
MAX_SUPPORT_MESSAGE_BYTES = 4096
#: Close codes of the support websocket (4xxx: application).
CLOSE_REFUSED = 4403
CLOSE_RATE_LIMITED = 4429
CLOSE_ENDED = 1000


class SupportRedeem(Message, frozen=True, tag="support.redeem"):
    """Client → server, first frame: the code read out by the technician, and who is asking."""

    sender: ClassVar[str] = "agent"
    code: CodeDigits
    hostname: ShortStr = ""
    user: ShortStr = ""
    client_version: ShortStr = ""


class SupportWelcome(Message, frozen=True, tag="support.welcome"):
    """Server → client: the code was good (and is now spent); wait for the technician's offer."""

    sender: ClassVar[str] = "server"
    client_id: Id
    technician: ShortStr
    group: ShortStr
    #: How long the client may wait for the technician before the server closes the socket.
    wait_s: Annotated[float, msgspec.Meta(ge=0)]
