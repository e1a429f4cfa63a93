"""Helpline wire protocol: sans-I/O messages, codec, limits and channel state.

Nothing in this package opens a socket or touches asyncio, so every rule here can be
tested (and fuzzed) without a network.
"""

from . import codec, control, errors, limits, messages, version
from . import requests as requests  # request.* and fix.outcome messages (issue 18)
from . import session as session  # session.* messages
from . import tasks as tasks  # task.* messages

__all__ = ["codec", "control", "errors", "limits", "messages", "version"]
