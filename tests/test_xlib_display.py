"""Two X servers that number extension events differently, in one process (agent/screen/xdisplay.py).

python-xlib shares its event table between connections; CI met it as a TypeError when a test opened
XWayland after Xvfb. Here: an Xvfb without XFIXES (so DAMAGE and the rest get other event codes)
opened first, then a full one; both work and each decodes its own DAMAGE events.
"""

from __future__ import annotations

from agent.screen.xdisplay import open_display
from tests.xvfb import start_xvfb


def test_connections_to_differently_numbered_servers_keep_their_own_events() -> None:
    without_xfixes = start_xvfb(320, 240, extra_args=("-extension", "XFIXES"))
    full = start_xvfb(320, 240)
    try:
        first = open_display(without_xfixes.display)
        second = open_display(full.display)  # TypeError here with python-xlib's shared table
        try:
            assert not first.has_extension("XFIXES") and second.has_extension("XFIXES")
            codes = [d.extension_event.DamageNotify for d in (first, second)]
            assert codes[0] != codes[1], codes  # the premise: the servers number DAMAGE differently
            for dpy, code in zip((first, second), codes, strict=True):
                assert dpy.display.event_classes[code].__name__ == "DamageNotify"
            assert first.display.event_classes is not second.display.event_classes
        finally:
            first.close()
            second.close()
    finally:
        full.stop()
        without_xfixes.stop()
