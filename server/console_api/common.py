"""Helpers shared by the console API modules: JSON bodies, account errors, the actor name."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ..accounts.users import AccountError
from ..auth.rights import Principal, Right
from ..http_util import json_error

MAX_BODY = 64 * 1024
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BadRequest(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


async def json_body(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise BadRequest("body too large")
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise BadRequest("body too large")
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("body must be a JSON object") from exc
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    return body


def string(body: dict[str, Any], key: str, *, required: bool = True, max_len: int = 256) -> str:
    value = body.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value) or len(value) > max_len:
        raise BadRequest(f"{key!r} must be a non-empty string of at most {max_len} characters")
    return value


def actor(principal: Principal) -> str:
    return principal.username


def rights_json(rights_by_group: dict[str, Right]) -> dict[str, list[str]]:
    return {group: rights.as_names() for group, rights in sorted(rights_by_group.items())}


def handles_errors(handler: Handler) -> Handler:
    """Turn AccountError/BadRequest into the API's JSON error shape."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except AccountError as exc:
            return json_error(exc.status, exc.code, exc.message)
        except BadRequest as exc:
            return json_error(400, "invalid", exc.message)

    wrapped.__name__ = getattr(handler, "__name__", "handler")
    wrapped.__doc__ = handler.__doc__
    return wrapped
