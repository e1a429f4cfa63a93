"""The consent seam: what the session code needs from a prompt and an indicator.

:class:`ConsentUI` has two verbs — ask the device user (:meth:`ConsentUI.prompt`) and
show the running-session indicator (:meth:`ConsentUI.indicator`) — and one noun,
``prompts``, the :class:`~agent.consent.guard.PromptGuard` it raises while a prompt is on
screen (remote input waits meanwhile). The real ones are
:class:`agent.consent.tk.TkConsentUI` (a Tk subprocess per window, on X or XWayland) and, on a
Wayland desktop without a usable X display, :class:`agent.consent.zenity.ZenityConsentUI` —
:func:`agent.consent.select.consent_ui` picks; tests may swap in
:class:`agent.consent.scripted.ScriptedConsentUI`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal, Protocol

from .guard import PromptGuard

Mode = Literal["view", "control"]
AnswerBy = Literal["user", "timeout", "unavailable"]


@dataclass(frozen=True)
class PromptRequest:
    """What the user is asked: who, view or control, why, and how long they have."""

    technician: str
    mode: Mode
    reason: str
    timeout_s: float
    #: Extra line, e.g. "control was asked for; this device's policy allows view only".
    note: str = ""
    #: True when asking again to upgrade a running session to control.
    upgrade: bool = False
    #: The remote session asked about: a session helper's prompt binds it to the person who answered.
    session_id: str = ""
    #: What else the session may do if allowed (agent.toolkit.caps): chat, files, clipboard — listed in the prompt.
    capabilities: tuple[str, ...] = ()
    #: Offer the "my helpdesk may bring colleagues" checkbox (the first prompt of an attended session).
    colleagues_option: bool = False
    #: A technician asks to join a running session (view only): the prompt names them as the joiner.
    join: bool = False


@dataclass(frozen=True)
class PromptAnswer:
    allowed: bool
    by: AnswerBy
    reason: str
    #: The user ticked "my helpdesk may bring colleagues": later joins need no new question.
    colleagues: bool = False


@dataclass(frozen=True)
class IndicatorInfo:
    technician: str
    mode: Mode
    unattended: bool = False
    #: The remote session shown (its indicator stays with the person who consented).
    session_id: str = ""
    #: What else the session may do (chat, files, clipboard), shown on the indicator.
    capabilities: tuple[str, ...] = ()
    #: Everyone watching (join and hand-off) and who controls; empty: just ``technician``.
    viewers: tuple[str, ...] = ()
    controller: str | None = None


class Indicator(Protocol):
    """A visible, always-on-top sign that a session runs; ``ended`` is set by its End button."""

    ended: asyncio.Event

    async def set_mode(self, mode: Mode) -> None: ...

    async def close(self) -> None: ...


class ConsentUI(Protocol):
    #: Raised while a prompt is on screen: the screen session refuses remote input meanwhile.
    prompts: PromptGuard

    async def prompt(self, request: PromptRequest) -> PromptAnswer:
        """Ask the user; never raises: unavailability is an answer (a refusal with a reason)."""

    async def indicator(self, info: IndicatorInfo) -> Indicator:
        """Show the indicator; raises :class:`ConsentUnavailable` when it cannot be shown."""


class ConsentUnavailable(Exception):
    """No display to show the prompt/indicator on (nobody logged in, X not reachable)."""
