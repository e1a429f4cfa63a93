"""The consent seam (:class:`~agent.consent.ui.ConsentUI`) carried out by a session helper.

The session code asks as it always did; this asks the broker which helper — the one in the
active, unlocked graphical session (:func:`agent.desktop.tracker.choose`), read from logind
at that moment — shows the prompt. An Allow binds the remote session to that helper: its
indicator, its screen and a later upgrade prompt go to the same person, never to whoever
switched in since. An answer that comes back after the session was switched away or locked
counts as nobody's. Nobody to ask is an answer too ("unavailable", with the reason), never an
exception and never an Allow.

Join and hand-off reach the helper as in direct mode: the prompt carries ``join`` and the
"may bring colleagues" offer (its answer comes back), and the indicator's people list follows
every join, leave and hand-off (:meth:`RemoteIndicator.set_people`); the helper's Tk windows
build the same text from the same :class:`~agent.consent.ui.PromptRequest`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from protocol import desktop as wire
from protocol.desktop import IndicatorClose, IndicatorMode, IndicatorPeople, IndicatorShow, PromptShow
from protocol.session import MAX_PEOPLE

from ..consent.guard import PromptGuard
from ..consent.ui import ConsentUnavailable, IndicatorInfo, Mode, PromptAnswer, PromptRequest
from .link import HelperLink, IndicatorState, new_id

if TYPE_CHECKING:
    from .broker import DesktopBroker

log = logging.getLogger(__name__)

#: On top of the prompt's own timeout: the helper starts Tk, and kills it after its own grace.
PROMPT_GRACE_S = 15.0
INDICATOR_START_S = 15.0


class RemoteIndicator:
    """An indicator shown by a helper; ``ended`` is set by its End button or when the helper goes."""

    def __init__(self, broker: DesktopBroker, link: HelperLink, indicator_id: str, state: IndicatorState,
                 session_id: str) -> None:
        self._broker, self._link, self._id, self._session_id = broker, link, indicator_id, session_id
        self._state = state
        self.ended = state.ended

    @property
    def people_line(self) -> str:
        """The people line the helper's indicator last said it shows ("Watching: ann (controls), tia")."""
        return self._state.people_line

    @property
    def people_shown(self) -> asyncio.Event:
        """Set when the helper confirms a people update (cleared by :meth:`set_people`)."""
        return self._state.people_shown

    async def set_mode(self, mode: Mode) -> None:
        with contextlib.suppress(ConnectionError):
            await self._link.send(IndicatorMode(indicator_id=self._id, mode=mode))

    async def set_people(self, viewers: tuple[str, ...], controller: str | None) -> None:
        """Everyone watching and who controls, as in direct mode (:meth:`agent.consent.tk.TkIndicator.set_people`)."""
        self._state.people_shown.clear()
        self._state.people_asked += 1
        try:
            await self._link.send(IndicatorPeople(
                indicator_id=self._id, viewers=[v[:256] for v in viewers[:MAX_PEOPLE]],
                controller=None if controller is None else controller[:256]))
        except ConnectionError:
            self._state.people_asked -= 1

    async def close(self) -> None:
        self._link.indicators.pop(self._id, None)
        self._broker.release(self._session_id)
        with contextlib.suppress(ConnectionError):
            await self._link.send(IndicatorClose(indicator_id=self._id))


class RemoteConsentUI:
    """Prompts and indicators on the helper of the person in front of the device."""

    def __init__(self, broker: DesktopBroker) -> None:
        self.broker = broker
        #: Raised while a prompt is out; the screen runs in the helper, whose own guard gates input there.
        self.prompts = PromptGuard()

    async def prompt(self, request: PromptRequest) -> PromptAnswer:
        link, why = await self.broker.person_to_ask(request.session_id)
        if link is None:
            return PromptAnswer(False, "unavailable", why)
        request_id = new_id("prompt")
        future: asyncio.Future[wire.PromptAnswer] = asyncio.get_running_loop().create_future()
        link.prompts[request_id] = future
        with self.prompts.showing():
            try:
                await link.send(PromptShow(request_id=request_id, technician=request.technician[:256],
                                           mode=request.mode, timeout_s=request.timeout_s,
                                           reason=request.reason[:256], note=request.note[:256],
                                           upgrade=request.upgrade, join=request.join,
                                           colleagues_option=request.colleagues_option,
                                           capabilities=list(request.capabilities)))  # type: ignore[arg-type]
                async with asyncio.timeout(request.timeout_s + PROMPT_GRACE_S):
                    reply = await future
            except TimeoutError:
                return PromptAnswer(False, "timeout", "no answer to the consent prompt")
            except ConnectionError:
                return PromptAnswer(False, "unavailable", "the session helper went away while asking")
            finally:
                link.prompts.pop(request_id, None)
        if reply.allowed:
            # Still the person in front? An Allow from a session switched away or locked meanwhile is nobody's.
            still, why = await self.broker.person_to_ask(request.session_id, expect=link)
            if still is not link:
                return PromptAnswer(False, "unavailable", f"the answer came from a session no longer in front: {why}")
            self.broker.bind(request.session_id, link)
            return PromptAnswer(True, "user", reply.reason or "allowed by the user",
                                colleagues=reply.colleagues and request.colleagues_option)
        if reply.by == "timeout":
            return PromptAnswer(False, "timeout", reply.reason or "no answer to the consent prompt")
        if reply.by == "unavailable":
            return PromptAnswer(False, "unavailable", reply.reason or "the consent prompt could not be shown")
        return PromptAnswer(False, "user", reply.reason or "denied by the user")

    async def indicator(self, info: IndicatorInfo) -> RemoteIndicator:
        link = await self.broker.helper_for(info.session_id)
        if link is None:
            raise ConsentUnavailable("no session helper to show the session indicator")
        indicator_id = new_id("indicator")
        state = IndicatorState()
        link.indicators[indicator_id] = state
        try:
            await link.send(IndicatorShow(indicator_id=indicator_id, technician=info.technician[:256],
                                          mode=info.mode, unattended=info.unattended,
                                          capabilities=list(info.capabilities),  # type: ignore[arg-type]
                                          session_id=info.session_id[:256],
                                          viewers=[v[:256] for v in info.viewers[:MAX_PEOPLE]],
                                          controller=None if info.controller is None else info.controller[:256]))
            async with asyncio.timeout(INDICATOR_START_S):
                ready = await state.ready
        except (TimeoutError, ConnectionError) as exc:
            link.indicators.pop(indicator_id, None)
            raise ConsentUnavailable(f"the session indicator did not start: {type(exc).__name__}") from exc
        if not ready.ok:
            link.indicators.pop(indicator_id, None)
            raise ConsentUnavailable(ready.message or "the session indicator could not be shown")
        self.broker.bind(info.session_id, link)
        return RemoteIndicator(self.broker, link, indicator_id, state, info.session_id)
