"""A background loop that runs one step ("tick") every ``tick_s`` seconds or when woken.

The task scheduler and the update-rollout driver both need it: a database outage is logged once
when it starts and once when it ends (:class:`common.outage.OutageLog`), any other failure with its
traceback, and the loop never dies of one bad tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from common.outage import OutageLog

from .store.errors import StoreUnavailable


async def tick_forever(tick: Callable[[], Awaitable[object]], *, wake: asyncio.Event, tick_s: Callable[[], float],
                       activity: str, logger: logging.Logger) -> None:
    """Run ``tick`` until cancelled; between ticks wait ``tick_s()`` seconds or until ``wake`` is set."""
    outage = OutageLog(logger, activity)
    while True:
        try:
            await tick()
        except StoreUnavailable as exc:
            outage.failed(exc)
        except Exception:
            logger.exception("%s failed; retrying", activity)
        else:
            outage.succeeded()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=tick_s())
        wake.clear()
