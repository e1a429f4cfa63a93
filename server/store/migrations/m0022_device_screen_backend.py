"""The screen backend a device last reported (issue 14): x11, wayland-mutter or wayland-portal.

Kept in ``devices`` (not only with the live connection on the node that holds it) so every node's
device page shows it; NULL: never said (an older agent, no desktop). ``screen_backend_at`` is when.
"""

VERSION = 22

STATEMENTS = [
    "ALTER TABLE devices ADD COLUMN screen_backend TEXT",
    "ALTER TABLE devices ADD COLUMN screen_backend_at {real}",
]
