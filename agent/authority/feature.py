"""The authority feature on the control channel: take ``authority.update``, answer ``authority.status``.

Built by :mod:`agent.runtime` with the store; other features (remote sessions, tasks) hold the
same store and register in :attr:`AuthorityFeature.on_change` to hear when what the device
honours changed (a revocation arrived, a document was withdrawn). An update the server split in
parts (:mod:`protocol.authority_parts`) is applied once its last part arrived on the same
connection; then :attr:`AuthorityStore.first_update` releases the task runs that overtook it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from protocol.authority_messages import AuthorityUpdate
from protocol.authority_parts import join_parts

from ..clock import Clock, SystemClock
from ..control_client import AgentClient
from .store import AuthorityStore

log = logging.getLogger(__name__)


class AuthorityFeature:
    def __init__(self, client: AgentClient, store: AuthorityStore, *, clock: Clock | None = None) -> None:
        self.client = client
        self.store = store
        self.clock: Clock = clock if clock is not None else SystemClock()
        #: Awaited after every update the store applied.
        self.on_change: list[Callable[[], Awaitable[None]]] = []
        #: Parts of a split update received so far, and the connection they came on.
        self._parts: list[AuthorityUpdate] = []
        self._parts_connection = 0

    async def on_update(self, client: AgentClient, update: AuthorityUpdate) -> None:
        connection = client.connections
        whole = self._join(update, connection)
        if whole is None:
            return
        status = self.store.apply(whole, self.clock.wall())
        log.info("authority updated", extra={"documents": len(status.accepted), "refused": len(status.refused),
                                             "unattended_ok": status.unattended_ok, "problem": status.problem})
        await self.store.first_update.applied(connection)
        try:
            await client.send(status)
        except ConnectionError as exc:
            log.info("could not report the authority status: %s", exc)
        for hook in self.on_change:
            await hook()

    def _join(self, update: AuthorityUpdate, connection: int) -> AuthorityUpdate | None:
        """The whole update once its last part is here (None until then, or when the parts do not fit)."""
        if update.parts == 1:
            return update  # e.g. the document before an offer, between two parts: the parts continue
        if update.part == 1:
            self._parts, self._parts_connection = [], connection
        if self._parts_connection != connection or len(self._parts) + 1 != update.part:
            log.warning("authority update part out of order; dropped until the next first part",
                        extra={"part": update.part, "parts": update.parts, "held": len(self._parts)})
            self._parts = []
            return None
        self._parts.append(update)
        if update.part < update.parts:
            return None
        parts, self._parts = self._parts, []
        joined = join_parts(parts)
        if isinstance(joined, str):
            self.store.audit.record("authority.parts_refused", reason=joined)
            log.warning("authority update parts refused: %s", joined)
            return None
        return joined


def attach(feature: AuthorityFeature) -> None:
    """Route ``authority.update`` of ``feature.client`` to ``feature``."""
    feature.client.register(AuthorityUpdate, feature.on_update)
