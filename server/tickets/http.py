"""The HTTP edge every connector goes through: TLS verified, bounded reads, errors translated.

One place turns an ITSM system's answer into either parsed JSON or a :class:`TicketError`
that says what went wrong in the remote's own words (ServiceNow's
``{"error": {"message", "detail"}, "status": "failure"}``, Jira's
``{"errorMessages": [...], "errors": {field: text}}``), whether retrying can help, how long the
remote asked us to wait (``429`` + ``Retry-After``), and whether the request may have been
carried out although we never saw the answer (``definite=False``: a timeout or a connection
cut after sending). Credentials travel only in headers, which are never logged or quoted.
"""

from __future__ import annotations

import email.utils
import json
import ssl
import time
from typing import Any

import aiohttp

#: Largest answer read from an ITSM system (a comment list, an incident).
MAX_RESPONSE_BYTES = 1024 * 1024
#: A Retry-After longer than this is taken as this (a remote cannot park the outbox for days).
MAX_RETRY_AFTER_S = 3600.0
TIMEOUT_S = 20.0


class TicketError(Exception):
    """A connector call that failed; ``message`` is safe to show and store (no credentials)."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None,
                 permanent: bool = False, definite: bool = True) -> None:
        super().__init__(message)
        self.message = message[:500]
        self.status = status
        self.retry_after = retry_after
        #: Retrying the same request cannot help (bad credentials, unknown ticket, invalid field).
        self.permanent = permanent
        #: The remote answered, so we know it did not act; False: it may have acted.
        self.definite = definite


def tls_context(ca_pem: str) -> ssl.SSLContext:
    """Certificate and host name verified always; ``ca_pem`` (PEM text) replaces the system CAs when given."""
    ctx = ssl.create_default_context(cadata=ca_pem) if ca_pem else ssl.create_default_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date), capped."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return max(0.0, min(seconds, MAX_RETRY_AFTER_S))


def remote_message(body: Any) -> str:
    """The error text of a ServiceNow or Jira error body, or '' for any other shape."""
    if not isinstance(body, dict):
        return ""
    error = body.get("error")
    if isinstance(error, dict):  # ServiceNow
        parts = [str(error.get(k)) for k in ("message", "detail") if error.get(k)]
        return ": ".join(parts)
    texts: list[str] = []
    messages = body.get("errorMessages")
    if isinstance(messages, list):  # Jira
        texts += [str(m) for m in messages[:10]]
    errors = body.get("errors")
    if isinstance(errors, dict):
        texts += [f"{k}: {v}" for k, v in list(errors.items())[:10]]
    if not texts and isinstance(body.get("message"), str):
        texts.append(body["message"])
    return "; ".join(texts)


async def _read_limited(resp: aiohttp.ClientResponse) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise TicketError(f"answer larger than {MAX_RESPONSE_BYTES} bytes", status=resp.status, definite=False)
        chunks.append(chunk)
    return b"".join(chunks)


async def call(http: aiohttp.ClientSession, method: str, url: str, *, ssl_context: ssl.SSLContext,
               headers: dict[str, str], json_body: Any = None, data: bytes | None = None,
               what: str = "request") -> Any:
    """One request; the parsed JSON answer (None when empty) or :class:`TicketError`."""
    send_headers = {"Accept": "application/json", **headers}
    if json_body is not None:
        data = json.dumps(json_body, separators=(",", ":")).encode()
    if data is not None:
        send_headers["Content-Type"] = "application/json"
    try:
        async with http.request(method, url, data=data, headers=send_headers, ssl=ssl_context,
                                allow_redirects=False, timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)) as resp:
            raw = await _read_limited(resp)
            parsed: Any = None
            if raw:
                try:
                    parsed = json.loads(raw)
                except ValueError:
                    parsed = None
            if resp.status >= 300:
                said = remote_message(parsed) or raw[:200].decode("utf-8", "replace").strip()
                status = resp.status
                transient = status in (408, 409, 423, 425, 429) or status >= 500
                raise TicketError(f"{what}: HTTP {status}{': ' + said if said else ''}", status=status,
                                  retry_after=retry_after(resp.headers.get("Retry-After")),
                                  permanent=not transient)
            if raw and parsed is None:
                raise TicketError(f"{what}: answer is not JSON", status=resp.status, definite=False)
            return parsed
    except TicketError:
        raise
    except aiohttp.ClientConnectorCertificateError as exc:
        raise TicketError(f"{what}: TLS certificate not trusted ({exc.certificate_error})", permanent=True) from exc
    except aiohttp.ClientConnectorError as exc:  # nothing was sent
        raise TicketError(f"{what}: cannot connect ({exc.os_error.strerror or type(exc.os_error).__name__})") from exc
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise TicketError(f"{what}: {type(exc).__name__} {str(exc)[:200]}", definite=False) from exc
