"""Open an X connection with its own extension-event table.

python-xlib (0.33) keeps the table that maps event codes to event classes on the protocol
``Display`` *class*, so every connection in a process shares it. X servers number extension
events in the order they load extensions: a second connection to a server that numbers them
differently (a user's new X server after logging out and in, XWayland next to Xvfb) then fails
with ``TypeError: 'type' object does not support item assignment``, or decodes the other server's
codes as the wrong events. Each connection opened here gets a table of its own.
"""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def _own_event_tables() -> None:
    from Xlib.protocol import display as protocol_display
    from Xlib.protocol import event

    original = protocol_display.Display.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        self.event_classes = event.event_class.copy()  # per connection, before extensions register theirs
        original(self, *args, **kwargs)

    protocol_display.Display.__init__ = init  # type: ignore[method-assign]


def open_display(name: str | None = None) -> Any:
    """``Xlib.display.Display(name)`` whose extension events are its own (see the module's note)."""
    from Xlib import display

    _own_event_tables()
    return display.Display(name)
