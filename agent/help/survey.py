"""The CSAT survey on the device (issue 19): ``survey.ask`` → a small window → ``survey.answer``.

The server asks once per resolved request (and again on reconnect only if it never got the ask
out). The agent shows one survey window at a time (:mod:`.survey_window`, a Tk child process
on the user's display), queues at most :data:`MAX_QUEUED` more, and answers only what the
person chose: *Not now*, a closed window, no display or :data:`WINDOW_TIMEOUT_S` without an
answer send nothing. The window is a seam (:data:`Shower`) so tests can answer for the person.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from protocol.surveys import MAX_COMMENT, SurveyAnswer, SurveyAsk

if TYPE_CHECKING:
    from agent.control_client import AgentClient

log = logging.getLogger(__name__)

MAX_QUEUED = 8
#: Tries to send an answer across reconnects before it is given up.
SEND_ATTEMPTS = 5
#: A survey left open this long is closed unanswered (the person walked away).
WINDOW_TIMEOUT_S = 4 * 3600.0
#: The window's first line (``ready``) must come this fast, or the display is not usable.
START_TIMEOUT_S = 20.0

#: Shows the survey to the person: (score, comment), or None when they did not answer.
Shower = Callable[[SurveyAsk], Coroutine[Any, Any, tuple[int, str] | None]]


def tk_shower(display: str | None, *, timeout_s: float = WINDOW_TIMEOUT_S) -> Shower:
    """The real window: ``python -m agent.help.survey_window`` on ``display``."""

    async def show(ask: SurveyAsk) -> tuple[int, str] | None:
        if not display:
            log.info("no display to ask the survey on", extra={"request_id": ask.request_id})
            return None
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agent.help.survey_window", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env={**os.environ, "DISPLAY": display})
        assert proc.stdin is not None and proc.stdout is not None
        try:
            spec = {"number": ask.number, "summary": ask.summary, "technician": ask.technician}
            proc.stdin.write((json.dumps(spec) + "\n").encode())
            await proc.stdin.drain()
            first = await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT_S)
            if json.loads(first or b"{}").get("event") != "ready":
                log.warning("survey window did not open", extra={"said": first[:200].decode(errors="replace")})
                return None
            line = await asyncio.wait_for(proc.stdout.readline(), timeout_s)
            event = json.loads(line or b"{}")
            if not isinstance(event, dict) or event.get("event") != "answer":
                return None
            score, comment = event.get("score"), event.get("comment", "")
            if not isinstance(score, int) or not 1 <= score <= 5 or not isinstance(comment, str):
                return None
            return score, comment[:MAX_COMMENT]
        except (TimeoutError, ValueError, OSError) as exc:
            log.info("survey not answered", extra={"request_id": ask.request_id, "why": repr(exc)})
            return None
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 2.0)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    await proc.wait()

    return show


@dataclass
class SurveyDesk:
    """Answers ``survey.ask``: one window at a time, the answer sent on the control channel."""

    client: AgentClient
    shower: Shower
    _queue: asyncio.Queue[SurveyAsk] = field(default_factory=lambda: asyncio.Queue(MAX_QUEUED))
    _seen: set[str] = field(default_factory=set)
    _worker: asyncio.Task[None] | None = None

    async def on_ask(self, _client: AgentClient, ask: SurveyAsk) -> None:
        if ask.request_id in self._seen:  # asked again after a reconnect while the window is up
            return
        try:
            self._queue.put_nowait(ask)
        except asyncio.QueueFull:
            log.info("survey dropped: too many waiting", extra={"request_id": ask.request_id})
            return
        self._seen.add(ask.request_id)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work(), name="survey-windows")

    async def _work(self) -> None:
        while not self._queue.empty():
            ask = self._queue.get_nowait()
            answer = await self.shower(ask)
            if answer is None:
                continue
            score, comment = answer
            message = SurveyAnswer(request_id=ask.request_id, score=score, comment=comment)
            for _attempt in range(SEND_ATTEMPTS):  # the person answered: a reconnect does not lose it
                try:
                    await self.client.send(message)
                    log.info("survey answered", extra={"request_id": ask.request_id, "score": score})
                    break
                except (ConnectionError, RuntimeError) as exc:
                    log.info("survey answer waits for the connection", extra={"request_id": ask.request_id,
                                                                              "error": str(exc)})
                    await self.client.ready.wait()


def attach(desk: SurveyDesk) -> None:
    desk.client.register(SurveyAsk, desk.on_ask)
