"""A scripted :class:`~agent.consent.ui.ConsentUI` for tests that do not exercise Tk."""

from __future__ import annotations

import asyncio
from collections import deque

from .guard import PromptGuard
from .ui import IndicatorInfo, Mode, PromptAnswer, PromptRequest


class ScriptedIndicator:
    def __init__(self, info: IndicatorInfo) -> None:
        self.info = info
        self.mode: Mode = info.mode
        self.ended = asyncio.Event()
        self.closed = asyncio.Event()
        #: What the indicator lists: everyone watching, and who controls (join and hand-off).
        self.viewers: tuple[str, ...] = info.viewers or (info.technician,)
        self.controller: str | None = info.controller or info.technician

    def press_end(self) -> None:
        """What the user's click on *End session* does."""
        self.ended.set()

    async def set_mode(self, mode: Mode) -> None:
        self.mode = mode

    async def set_people(self, viewers: tuple[str, ...], controller: str | None) -> None:
        self.viewers, self.controller = viewers, controller

    async def close(self) -> None:
        self.closed.set()


class ScriptedConsentUI:
    """Answers prompts from a queue of booleans (empty queue = the user never answers)."""

    def __init__(self, answers: list[bool] | None = None, *, colleagues: bool = False) -> None:
        self.answers: deque[bool] = deque(answers or [])
        #: Whether the user ticks "my helpdesk may bring colleagues" when the prompt offers it.
        self.colleagues = colleagues
        self.requests: list[PromptRequest] = []
        self.indicators: list[ScriptedIndicator] = []
        self.indicator_shown = asyncio.Event()
        self.prompts = PromptGuard()

    async def prompt(self, request: PromptRequest) -> PromptAnswer:
        self.requests.append(request)
        with self.prompts.showing():
            if not self.answers:
                await asyncio.sleep(request.timeout_s)  # nobody answers: the prompt's own timeout
                return PromptAnswer(False, "timeout", "no answer")
            allowed = self.answers.popleft()
            return PromptAnswer(allowed, "user", "allowed" if allowed else "denied by the user",
                                colleagues=allowed and self.colleagues and request.colleagues_option)

    async def indicator(self, info: IndicatorInfo) -> ScriptedIndicator:
        indicator = ScriptedIndicator(info)
        self.indicators.append(indicator)
        self.indicator_shown.set()
        return indicator
