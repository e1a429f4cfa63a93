"""Raise the file-descriptor limit at start; say plainly when it stays low.

Every connected agent, console connection, database connection and open file holds one
descriptor. Distributions still start services with a soft limit of 1,024 while allowing far more
(the hard limit), and under 1,024 a thousand idle sockets once locked everybody out.
"""

from __future__ import annotations

import logging
import resource
from pathlib import Path

log = logging.getLogger(__name__)

#: Below this the server warns: a mid-sized fleet plus a connection flood does not fit.
LOW_FD_LIMIT = 8192
_NR_OPEN = Path("/proc/sys/fs/nr_open")


def _ceiling(hard: int) -> int:
    """What the soft limit can be raised to: the hard limit, or the kernel's nr_open if unlimited."""
    if hard != resource.RLIM_INFINITY:
        return hard
    try:
        return int(_NR_OPEN.read_text())
    except (OSError, ValueError):
        return 1024 * 1024


def raise_fd_limit() -> int:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit; return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _ceiling(hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (OSError, ValueError) as exc:
            log.warning("could not raise the file-descriptor limit", extra={"soft": soft, "hard": hard,
                                                                            "error": str(exc)})
    if soft == resource.RLIM_INFINITY:
        return _ceiling(hard)
    if soft < LOW_FD_LIMIT:
        log.warning(f"the file-descriptor limit is {soft} (hard limit {hard}): every agent, console "
                    f"connection and open file holds one, so fewer than {soft} connections fit in all, and the "
                    "automatic cap on unauthenticated connections shrinks to match; raise the hard limit "
                    f"(LimitNOFILE= in the systemd unit, or ulimit -Hn) to at least {LOW_FD_LIMIT}",
                    extra={"soft": soft, "hard": hard})
    return soft
