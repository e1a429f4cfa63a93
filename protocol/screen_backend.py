"""Which screen backend a device would use, as its hello's capabilities say (issue 14).

One capability string ``screen.backend:NAME`` among the hello's ``capabilities`` (already a
bounded list of short strings): servers that do not know it ignore it, so no new hello field
has to be understood by older servers. The names are the ones the live session stats carry.

What the hello said can change while the channel is up (the root service's session helper starts
after the service connected, or goes away): the agent then sends :class:`ScreenBackendChanged`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar, Literal

from .messages import Message

#: X11 (mss/XDamage), GNOME's Mutter remote-desktop API, the xdg-desktop-portal (KDE, wlroots, GNOME).
ScreenBackendName = Literal["", "x11", "wayland-mutter", "wayland-portal"]
NAMES: tuple[str, ...] = ("x11", "wayland-mutter", "wayland-portal")
PREFIX = "screen.backend:"
#: Beside ``screen.backend:wayland-portal``: the desktop's portal offers ScreenCast but no RemoteDesktop (wlroots
#: desktops), so screen sessions there are view-only. Servers that do not know it ignore it.
VIEW_ONLY = "screen.view-only"


def capability(name: str) -> list[str]:
    """The capability naming ``name`` (nothing for an unknown or empty name)."""
    return [PREFIX + name] if name in NAMES else []


def from_capabilities(capabilities: Iterable[str]) -> str | None:
    """The backend a hello's capabilities name, or None (an older agent, or no desktop known yet)."""
    for item in capabilities:
        if item.startswith(PREFIX) and item[len(PREFIX):] in NAMES:
            return item[len(PREFIX):]
    return None


class ScreenBackendChanged(Message, frozen=True, tag="device.screen_backend"):
    """Agent → server: the screen backend is now ``backend`` ("" none: no session helper, no desktop), and whether
    sessions there are view-only (the hello's :data:`VIEW_ONLY`; absent from older agents: False)."""

    sender: ClassVar[str] = "agent"
    backend: ScreenBackendName
    view_only: bool = False
