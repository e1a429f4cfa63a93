"""The authority feature on the control channel: take ``authority.update``, answer ``authority.status``.

Built by :mod:`agent.runtime` with the store; other features (remote sessions, tasks) hold the
same store and register in :attr:`AuthorityFeature.on_change` to hear when what the device
honours changed (a revocation arrived, a document was withdrawn).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from protocol.authority_messages import AuthorityUpdate

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

    async def on_update(self, client: AgentClient, update: AuthorityUpdate) -> None:
        status = self.store.apply(update, self.clock.wall())
        log.info("authority updated", extra={"documents": len(status.accepted), "refused": len(status.refused),
                                             "unattended_ok": status.unattended_ok, "problem": status.problem})
        try:
            await client.send(status)
        except ConnectionError as exc:
            log.info("could not report the authority status: %s", exc)
        for hook in self.on_change:
            await hook()


def attach(feature: AuthorityFeature) -> None:
    """Route ``authority.update`` of ``feature.client`` to ``feature``."""
    feature.client.register(AuthorityUpdate, feature.on_update)
