"""Has this connection's first ``authority.update`` been applied? Work that needs it waits here.

Why: on a new connection the server pushes the authority and then delivers due task runs, but its
scheduler can deliver a run to the new connection while the push is still being built; a fresh
device then holds no root yet (and a device back from a long night a stale revocation list) and
refused a run that the update arriving a moment later would have allowed. So a ``task.run`` that
overtakes the first update is held (agent/tasks/hold.py) — a few at most, :attr:`FirstUpdate.hold_s`
at most — until :meth:`FirstUpdate.applied` is called for this connection, then decided; if no
update comes in time it is refused, saying so.

Connections are numbered by :attr:`agent.control_client.AgentClient.connections`.
"""

from __future__ import annotations

import asyncio


class FirstUpdate:
    """The number of the latest connection whose first authority update has been applied."""

    def __init__(self, *, hold_s: float = 10.0, max_held: int = 16) -> None:
        #: How long a held run waits for the first update before it is refused.
        self.hold_s = hold_s
        #: Runs held at once; more are refused at once.
        self.max_held = max_held
        self._applied_on = 0
        self._changed = asyncio.Condition()

    def applied_for(self, connection: int) -> bool:
        return self._applied_on >= connection

    async def applied(self, connection: int) -> None:
        """An update received on ``connection`` has been applied: release what waits for it."""
        async with self._changed:
            self._applied_on = max(self._applied_on, connection)
            self._changed.notify_all()

    async def wait(self, connection: int, timeout: float | None = None) -> bool:
        """Wait until :meth:`applied` for ``connection`` (or a later one); False after ``timeout`` seconds."""
        async with self._changed:
            try:
                async with asyncio.timeout(self.hold_s if timeout is None else timeout):
                    await self._changed.wait_for(lambda: self.applied_for(connection))
            except TimeoutError:
                return False
        return True
