"""Connection hygiene for both listeners (issue 12).

Under a 1,024 file-descriptor limit, about 1,000 idle sockets once locked every agent and API user
out, and asyncio's accept path wrote 544,275 identical tracebacks in a minute. These modules put a
bound on every connection that has not yet shown a complete request, close the ones that dawdle,
and log trouble as counts:

* :mod:`.limits` — the caps and timeouts (:class:`ConnectionLimits`) and the pure bookkeeping of
  waiting connections (:class:`Admission`);
* :mod:`.listener` — the accept loop and aiohttp site that apply them (:class:`GuardedSite`);
* :mod:`.guard` — the per-connection protocol wrapper that knows when a request is in progress;
* :mod:`.fdlimit` — raises the descriptor limit at start and warns when it stays low;
* :mod:`.ratelog` — one log line with a count per interval instead of one line per event;
* :mod:`.heap` — keeps the started server's objects out of full garbage collections.
"""

from .fdlimit import raise_fd_limit
from .guard import Gatekeeper
from .heap import freeze_startup_heap
from .limits import Admission, ConnectionLimits
from .listener import GuardedSite

__all__ = ["Admission", "ConnectionLimits", "Gatekeeper", "GuardedSite", "freeze_startup_heap", "raise_fd_limit"]
