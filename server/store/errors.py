"""One error for "the database cannot answer now", whatever the backend.

Each backend translates its own connection, I/O, disk-full and shutdown errors at the boundary
(``raise StoreUnavailable(...) from exc``, as httpx maps httpcore's errors), so nothing above the
store handles asyncpg or sqlite3 exceptions: the API answers 503 ``store_unavailable``
(:mod:`server.api.middleware`), the CLI prints one line, the event poller logs once per outage.
Everything else a backend raises (constraint violations, SQL errors: bugs or conflicts) passes
through unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from common.errors import Unavailable


class StoreUnavailable(Unavailable):
    """The database is down, unreachable, full, or refusing connections; retrying later may work."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the database is unavailable: {reason}")
        #: The backend's own words (host, port, errno): for logs and the local CLI, not for API clients.
        self.reason = reason


def reason_of(exc: BaseException) -> str:
    """``Type: first line of the message`` (the type alone when the message is empty)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


@contextlib.contextmanager
def translated(is_unavailable: Callable[[BaseException], bool]) -> Iterator[None]:
    """Re-raise the errors ``is_unavailable`` recognises as :class:`StoreUnavailable`."""
    try:
        yield
    except StoreUnavailable:
        raise
    except Exception as exc:
        if is_unavailable(exc):
            raise StoreUnavailable(reason_of(exc)) from exc
        raise
