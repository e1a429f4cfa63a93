"""Answering one caller (a window, a ``--send``): the local help protocol's calls → the help desk.

Transport-free: a :class:`CallerSession` gets decoded calls and a ``send`` for its replies; the
direct-mode socket (:mod:`.local_socket`) and the service's broker (helper calls relayed over the
desktop socket) both drive one per connection. Calls run concurrently (a fix may take minutes
while the window stays usable); replies carry the call's number.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from .desk import Caller, HelpDesk, HelpRefused, Watcher
from .wire import (
    Add,
    AgentMessage,
    CallerMessage,
    Done,
    Failed,
    FixDone,
    GetState,
    Open,
    Opened,
    Requests,
    RequestView,
    RunFix,
    Watch,
    Withdraw,
)

log = logging.getLogger(__name__)

#: Calls of one caller running at once; more are answered "busy".
MAX_CALLS = 8


class CallerSession:
    def __init__(self, desk: HelpDesk, caller: Caller, send: Callable[[AgentMessage], Awaitable[None]]) -> None:
        self.desk, self.caller, self._send = desk, caller, send
        self._tasks: set[asyncio.Task[None]] = set()
        self._watcher: Watcher | None = None

    def receive(self, message: CallerMessage) -> None:
        if len(self._tasks) >= MAX_CALLS:
            self._spawn(self._send(Failed(call=message.call, reason="too many calls at once")))
            return
        self._spawn(self._answer(message))

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, message: CallerMessage) -> None:
        try:
            reply = await self._reply(message)
        except HelpRefused as exc:
            reply = Failed(call=message.call, reason=str(exc)[:4000])
        except Exception as exc:
            log.exception("help call failed", extra={"call": type(message).__name__})
            reply = Failed(call=message.call, reason=f"the agent failed: {type(exc).__name__}")
        try:
            await self._send(reply)
        except (ConnectionError, OSError):
            log.info("help caller went away before its answer")

    async def _reply(self, message: CallerMessage) -> AgentMessage:
        desk, caller = self.desk, self.caller
        if isinstance(message, GetState):
            await desk.refresh()
            return await desk.state(caller, message.call)
        if isinstance(message, Open):
            return Opened(call=message.call, local_id=await desk.open(caller, message))
        if isinstance(message, Add):
            await desk.add(caller, message.local_id, message.text)
            return Done(call=message.call)
        if isinstance(message, Withdraw):
            await desk.withdraw(caller, message.local_id)
            return Done(call=message.call)
        if isinstance(message, RunFix):
            result = await desk.run_fix(caller, message.fix_id, dict(message.params))
            return FixDone(call=message.call, fix_id=result.fix_id, title=result.title[:256], ok=result.ok,
                           detail=result.detail)
        assert isinstance(message, Watch)
        if self._watcher is None:
            self._watcher = desk.watch(caller, self._push)
        return Requests(call=message.call, requests=desk.views(caller.uid))

    def _push(self, views: list[RequestView]) -> None:
        self._spawn(self._send(Requests(call=0, requests=views)))

    async def close(self) -> None:
        if self._watcher is not None:
            self.desk.unwatch(self._watcher)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
