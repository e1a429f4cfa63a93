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
#: The first retry's delay after a failed send (doubling, at most :data:`RETRY_CAP_S`).
RETRY_S = 1.0
RETRY_CAP_S = 30.0
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
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "agent.help.survey_window", stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
                env={**os.environ, "DISPLAY": display})
        except OSError as exc:  # no interpreter, no processes left: the survey is not shown
            log.warning("survey window could not start", extra={"request_id": ask.request_id, "error": str(exc)})
            return None
        assert proc.stdin is not None and proc.stdout is not None
        try:
            spec = {"number": ask.number, "summary": ask.summary, "technician": ask.technician}
            proc.stdin.write((json.dumps(spec) + "\n").encode())
            await proc.stdin.drain()
            first = await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT_S)
            if _event(first).get("event") != "ready":
                log.warning("survey window did not open", extra={"said": first[:200].decode(errors="replace")})
                return None
            event = _event(await asyncio.wait_for(proc.stdout.readline(), timeout_s))
            if event.get("event") != "answer":
                return None
            score, comment = event.get("score"), event.get("comment", "")
            if type(score) is not int or not 1 <= score <= 5 or not isinstance(comment, str):
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


def _event(line: bytes) -> dict[str, Any]:
    """One line of the window's output as a JSON object; anything else (a list, a number, junk) is {}."""
    try:
        event = json.loads(line or b"{}")
    except ValueError:  # also a line that is not UTF-8
        return {}
    return event if isinstance(event, dict) else {}


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
            try:
                answer = await self.shower(ask)
            except Exception:  # a broken window must not stop the surveys queued behind it
                log.exception("survey window failed", extra={"request_id": ask.request_id})
                continue
            if answer is None:
                continue
            score, comment = answer
            await self._send(SurveyAnswer(request_id=ask.request_id, score=score, comment=comment))

    async def _send(self, message: SurveyAnswer) -> bool:
        """Send the person's answer, across reconnects: after a failed send the channel may still say it is
        ready (it has not noticed the drop yet), so each retry waits a growing delay before waiting for it."""
        for attempt in range(SEND_ATTEMPTS):
            await self.client.ready.wait()
            try:
                await self.client.send(message)
            except Exception as exc:  # ConnectionError, the websocket's ConnectionClosed, …
                log.info("survey answer waits for the connection", extra={"request_id": message.request_id,
                                                                          "error": repr(exc)})
                await asyncio.sleep(min(RETRY_CAP_S, RETRY_S * 2 ** attempt))
                continue
            log.info("survey answered", extra={"request_id": message.request_id, "score": message.score})
            return True
        log.warning("survey answer given up", extra={"request_id": message.request_id})
        return False


def attach(desk: SurveyDesk) -> None:
    desk.client.register(SurveyAsk, desk.on_ask)
