"""Errors every layer may raise and the CLI knows how to report.

    Exception
     └── Unavailable              a service this process depends on is down (the database);
          │                       trying again later may work. The CLI prints the message on
          │                       one line and exits 75 (EX_TEMPFAIL, sysexits.h).
          └── server.store.StoreUnavailable   the store's backends raise it for connection,
                                              I/O, disk-full and shutdown errors
"""

from __future__ import annotations

#: Exit status of a command that failed because a service it needs is down (EX_TEMPFAIL).
EXIT_UNAVAILABLE = 75


class Unavailable(Exception):
    """A dependency is down; the message says which and why, on one line."""
