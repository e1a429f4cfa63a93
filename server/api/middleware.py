"""The two middlewares every Helpline app runs, outermost first.

:func:`errors` renders every failure — :class:`~server.errors.ApiError`, msgspec validation
errors, aiohttp's own 404/405/413, a database that cannot answer (503 ``store_unavailable``,
logged at most every :data:`UNAVAILABLE_LOG_EVERY_S` with the reason and a count), and unexpected
exceptions (logged, answered 500) — as the one JSON error body ``{"error": {"code", "message"}}``.

:func:`enforce` looks up the :class:`~server.api.route.Route` the request matched and refuses
anything undeclared (deny by default). For declared routes it authenticates the caller,
checks CSRF on cookie writes and Origin on websocket upgrades, checks the declared right on
the group the route's scope resolves to, and decodes the declared query and body types.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import time
from typing import Any

import msgspec
from aiohttp import WSCloseCode, web

from common.bodies import read_capped
from server.auth.rights import ANY_GROUP, Principal, Right
from server.errors import ApiError
from server.net.ratelog import CountingLog
from server.store import StoreUnavailable

from . import context
from .route import GLOBAL, AnyOf, Gate, Handler, Route, Scope, access_text, holds

log = logging.getLogger(__name__)

CSRF_HEADER = "X-CSRF-Token"

#: All a caller logged in with a generated password may do until they choose their own
#: (``Principal.must_change_password``); every other route answers 403 password_change_required.
PASSWORD_CHANGE_ROUTES = frozenset({("POST", "/api/v1/auth/password"), ("GET", "/api/v1/auth/me"),
                                    ("POST", "/api/v1/auth/logout")})

_HTTP_CODES = {400: "invalid", 401: "unauthenticated", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 413: "too_large", 415: "unsupported_media_type"}


#: During an outage every request fails the same way: one log line per this many seconds, with a count.
UNAVAILABLE_LOG_EVERY_S = 10.0
#: Seconds a client is asked to wait before trying again (``Retry-After`` of a 503).
RETRY_AFTER_S = 5


class _UnavailableLog:
    """Rate-limits the "database unavailable" warning (a 25 s outage must not log every request)."""

    def __init__(self) -> None:
        self.last = float("-inf")
        self.suppressed = 0

    def note(self, request: web.Request, exc: StoreUnavailable) -> None:
        now = time.monotonic()
        if now - self.last < UNAVAILABLE_LOG_EVERY_S:
            self.suppressed += 1
            return
        log.warning("request failed: database unavailable", extra={
            "reason": exc.reason, "method": request.method, "path": request.path,
            "similar_failures_not_logged": self.suppressed})
        self.last, self.suppressed = now, 0


_unavailable_log = _UnavailableLog()
#: Peers that went away while their request ran, counted per first path segment (one line per 30 s, no traceback).
_gone_log = CountingLog(log, "requests ended by the peer going away", interval_s=30.0, level=logging.INFO)


def error_response(status: int, code: str, message: str) -> web.Response:
    """The one error shape of the REST API: ``{"error": {"code", "message"}}``."""
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def _from_http_exception(exc: web.HTTPException) -> web.Response:
    code = _HTTP_CODES.get(exc.status, "http_error")
    message = exc.reason
    if exc.text:
        try:
            parsed = json.loads(exc.text)
            code, message = str(parsed["error"]["code"]), str(parsed["error"]["message"])
        except (ValueError, KeyError, TypeError):  # aiohttp's own text ("404: Not Found") says no more than the reason
            message = exc.text if len(exc.text) < 200 and exc.text != f"{exc.status}: {exc.reason}" else exc.reason
    response = error_response(exc.status, code, message)
    if exc.status == 405 and "Allow" in exc.headers:
        response.headers["Allow"] = exc.headers["Allow"]
    return response


#: The response a handler already started (headers sent, a websocket upgraded), if any.
STARTED: web.RequestKey[web.StreamResponse] = web.RequestKey("helpline_started", web.StreamResponse)


async def remember_started(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare`` hook: note the response whose headers are going out."""
    request[STARTED] = response


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return await _too_late(request, exc) or _from_http_exception(exc)
    except (ConnectionResetError, BrokenPipeError) as exc:  # the peer went away mid-request: nothing is wrong here
        _gone_log.note(request.path.split("/")[1] or "/", f"{type(exc).__name__}: {exc}")
        return request.get(STARTED) or error_response(400, "gone", "the connection was closed by the peer")
    except Exception as exc:
        return await _too_late(request, exc) or _error_body(request, exc)


def _error_body(request: web.Request, exc: Exception) -> web.Response:
    if isinstance(exc, ApiError):
        return error_response(exc.status, exc.code, exc.message)
    if isinstance(exc, StoreUnavailable):
        _unavailable_log.note(request, exc)
        response = error_response(503, "store_unavailable", "the database is unavailable; try again shortly")
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
        return response
    if isinstance(exc, msgspec.ValidationError):
        return error_response(400, "invalid", str(exc))
    if isinstance(exc, msgspec.DecodeError):
        return error_response(400, "malformed", f"body is not valid JSON: {exc}")
    log.error("unhandled error", exc_info=exc, extra={"method": request.method, "path": request.path})
    return error_response(500, "internal", "internal error; see the server log")


async def _too_late(request: web.Request, exc: Exception) -> web.StreamResponse | None:
    """A failure after the response started (a websocket past its 101): no error body can follow.

    Writing one would put an HTTP response into the websocket stream (the peer sees a protocol
    error). The websocket is closed instead — 1013 "try again later" when the database is down,
    1011 otherwise — and the started response is handed back for aiohttp to finish.
    """
    started = request.get(STARTED)
    if started is None:
        return None
    if isinstance(exc, StoreUnavailable):
        _unavailable_log.note(request, exc)
        code, reason = WSCloseCode.TRY_AGAIN_LATER, "database unavailable"
    else:
        log.error("error after the response started", exc_info=exc,
                  extra={"method": request.method, "path": request.path})
        code, reason = WSCloseCode.INTERNAL_ERROR, "internal error"
    if isinstance(started, web.WebSocketResponse) and not started.closed:
        await started.close(code=code, message=reason.encode())
    return started


@web.middleware
async def enforce(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = request.app[context.ROUTES].get(request.match_info.route)
    if route is None:
        raised = request.match_info.http_exception
        if raised is not None:
            raise raised
        raise ApiError(404, "not_found", "no such route")  # an undeclared route: refuse, never serve
    if route.access is Gate.DEVICE_CERT:
        return await handler(request)
    if route.access is not Gate.PUBLIC:
        caller = await _authenticate(request)
        if caller.must_change_password and (route.method, route.path) not in PASSWORD_CHANGE_ROUTES:
            raise ApiError(403, "password_change_required", "choose a new password first (POST /api/v1/auth/password)")
        if route.writes:
            _check_csrf(request)
        if route.websocket:
            _check_origin(request)
        if not isinstance(route.access, Gate):
            await _check_right(request, route, caller, route.access)
    elif route.websocket:
        _check_origin(request)
    if route.query is not None:
        request[context.QUERY] = _decode_query(request, route.query)
    if route.body is not None:
        request[context.BODY] = await _decode_body(request, route)
    return await handler(request)


async def _authenticate(request: web.Request) -> Principal:
    for authenticator in request.app[context.AUTHENTICATORS]:
        found = await authenticator(request)
        if found is not None:
            request[context.PRINCIPAL] = found
            return found
    raise ApiError(401, "unauthenticated", "log in or present an API token")


def _check_csrf(request: web.Request) -> None:
    """Cookie-authenticated writes carry the session's CSRF token (Bearer calls need none:
    browsers never send them on their own)."""
    expected = request.get(context.CSRF)
    if isinstance(expected, str):
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode(), expected.encode()):
            raise ApiError(403, "csrf", f"missing or wrong {CSRF_HEADER} header")


def _check_origin(request: web.Request) -> None:
    """Cross-site websocket hijacking defence: the Origin must be the console's own."""
    origin = request.headers.get("Origin")
    allowed = {f"https://{request.host}"}
    if context.ORIGINS in request.app:
        allowed |= request.app[context.ORIGINS](request)
    if origin is None or origin not in allowed:
        raise ApiError(403, "bad_origin", "cross-origin websocket refused")


async def _check_right(request: web.Request, route: Route, caller: Principal, needed: Right | AnyOf) -> None:
    scope = route.scope
    if isinstance(scope, Scope):
        group = await scope.lookup(context.db(request), request.match_info[scope.param])
        # No right at all on the object's group looks exactly like no such object.
        if group is None or caller.rights_on(group) is Right.NONE:
            raise ApiError(404, "not_found", f"no such {scope.noun}")
        request[context.GROUP] = group
        allowed = holds(caller.rights_on(group), needed)
        where = f" on group {group!r}"
    elif scope is GLOBAL:
        allowed = holds(caller.rights_by_group.get(ANY_GROUP, Right.NONE), needed)
        where = " on every group"
    else:
        allowed = any(holds(rights, needed) for rights in caller.rights_by_group.values())
        where = ""
    if not allowed:
        raise ApiError(403, "forbidden", f"requires right {access_text(needed)}{where}")


def _decode_query(request: web.Request, kind: type[Any]) -> Any:
    # An empty parameter (``?status=``, as forms send) means "not given".
    raw = {key: request.query.getone(key) for key in request.query if request.query.getone(key) != ""}
    value = msgspec.convert(raw, kind, strict=False)
    _reject_non_finite(value, "query")
    return value


async def _decode_body(request: web.Request, route: Route) -> Any:
    if request.content_length is not None and request.content_length > route.max_body:
        raise ApiError(413, "too_large", f"body larger than {route.max_body} bytes")
    # To the end (a body sent slowly arrives in pieces), refused past the route's limit.
    raw = await read_capped(request.content, route.max_body,
                            lambda: ApiError(413, "too_large", f"body larger than {route.max_body} bytes"))
    value = msgspec.json.decode(raw or b"{}", type=route.body)
    _reject_non_finite(value, "body")
    return value


def _reject_non_finite(value: Any, where: str) -> None:
    """NaN and infinities are refused everywhere (JSON cannot carry them, query strings can)."""
    for item in _floats(msgspec.to_builtins(value)):
        if not math.isfinite(item):
            raise ApiError(400, "invalid", f"{where}: numbers must be finite")


def _floats(value: Any) -> list[float]:
    if isinstance(value, float):
        return [value]
    if isinstance(value, dict):
        return [f for v in value.values() for f in _floats(v)]
    if isinstance(value, list | tuple):
        return [f for v in value for f in _floats(v)]
    return []
