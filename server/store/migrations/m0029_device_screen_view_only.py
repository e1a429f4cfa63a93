"""Whether a device's screen sessions are view-only (issue 14): its portal offers ScreenCast but no RemoteDesktop.

Stored beside ``screen_backend`` (m0022) from the hello's ``screen.view-only`` capability or a
``device.screen_backend`` change, so the refusal of a control session and every node's device page
read it without the live connection. 0: not view-only or never said (older agents). Only meaningful
beside ``screen_backend = 'wayland-portal'``: readers require both, so a row an older node updated
(the backend, not this column) is never taken for view-only on another backend.
"""

VERSION = 29

STATEMENTS = [
    "ALTER TABLE devices ADD COLUMN screen_view_only INTEGER NOT NULL DEFAULT 0",
]
