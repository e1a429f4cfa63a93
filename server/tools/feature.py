"""Wire the tools area into the server: the answer handler and the routes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from protocol.tools import ToolResult

from .. import api
from .api import routes
from .calls import ToolCalls

if TYPE_CHECKING:
    from ..app import HelplineServer

TOOL_CALLS: web.AppKey[ToolCalls] = web.AppKey("helpline_tool_calls", ToolCalls)


def setup(server: HelplineServer) -> ToolCalls:
    calls = ToolCalls(server)
    server.console_app[TOOL_CALLS] = calls
    server.agent_handlers.register(ToolResult, calls.on_result)
    api.add_routes(server.console_app, routes(calls))
    return calls
