"""Wake-on-LAN through an online agent: the messages and the magic packet (sans-I/O).

A sleeping device cannot be reached over its control channel, and a magic packet does not cross
routers: the server asks an agent that is online **on the same IPv4 network** to broadcast it
there. ``wake.request`` names the sleeping device's MAC addresses and the broadcast addresses of
the networks they share with the relaying agent; the agent checks each broadcast address is one
of its own networks' (it will not spray packets where the server points) and answers
``wake.result``. The packet (AMD's "Magic Packet" format) is 6 bytes of ``0xFF`` followed by the
target's 48-bit MAC 16 times, sent as a UDP broadcast to port 9 (discard).
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, ClassVar

import msgspec

from . import limits
from .messages import Id, Message, ShortStr

#: The discard port: nothing answers, every NIC's wake filter looks at any UDP payload.
WAKE_PORT = 9
#: A device has few wired interfaces; a request naming more is not one device.
MAX_MACS = 8
MAX_BROADCASTS = 8
PACKET_BYTES = 6 + 16 * 6

Mac = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")]
IPv4 = Annotated[str, msgspec.Meta(min_length=7, max_length=15, pattern=r"^\d{1,3}(\.\d{1,3}){3}$")]


class WakeRequest(Message, frozen=True, tag="wake.request"):
    """Server → an online agent: broadcast the magic packet for ``target_device`` on these networks."""

    sender: ClassVar[str] = "server"
    target_device: Id
    macs: Annotated[list[Mac], msgspec.Meta(min_length=1, max_length=MAX_MACS)]
    broadcasts: Annotated[list[IPv4], msgspec.Meta(min_length=1, max_length=MAX_BROADCASTS)]
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = WAKE_PORT
    reason: ShortStr = ""

    def __post_init__(self) -> None:
        for address in self.broadcasts:
            ipaddress.IPv4Address(address)  # ValueError → the codec's invalid message


class WakeResult(Message, frozen=True, tag="wake.result"):
    """Agent → server: how many packets went out; ``refused`` names what the agent would not do and why."""

    sender: ClassVar[str] = "agent"
    in_reply_to: Id
    target_device: Id
    sent: Annotated[int, msgspec.Meta(ge=0, le=MAX_MACS * MAX_BROADCASTS)]
    refused: Annotated[list[ShortStr], msgspec.Meta(max_length=limits.MAX_SMALL_LIST)] = []


def normalize_mac(text: str) -> str:
    """``AA-BB-CC-DD-EE-FF`` / ``aabb.ccdd.eeff`` / ``aa:bb:…`` → ``aa:bb:cc:dd:ee:ff``; ValueError otherwise.

    The all-zero and broadcast addresses, and group (multicast) addresses, are no device's NIC.
    """
    digits = "".join(c for c in text.lower() if c not in ":-.")
    if len(digits) != 12 or any(c not in "0123456789abcdef" for c in digits):
        raise ValueError(f"{text!r} is not a MAC address")
    raw = bytes.fromhex(digits)
    if raw in (b"\x00" * 6, b"\xff" * 6) or raw[0] & 1:
        raise ValueError(f"{text!r} is not a unicast MAC address")
    return ":".join(digits[i:i + 2] for i in range(0, 12, 2))


def magic_packet(mac: str) -> bytes:
    """The 102-byte payload that wakes the NIC with this MAC."""
    raw = bytes.fromhex(normalize_mac(mac).replace(":", ""))
    return b"\xff" * 6 + raw * 16


def mac_of_packet(payload: bytes) -> str | None:
    """The MAC a magic packet wakes, or None when ``payload`` is not one (for listeners and tests)."""
    if len(payload) < PACKET_BYTES or payload[:6] != b"\xff" * 6:
        return None
    raw = payload[6:12]
    if payload[6:PACKET_BYTES] != raw * 16:
        return None
    return ":".join(f"{b:02x}" for b in raw)
