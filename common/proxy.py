"""Outbound connections through an HTTP CONNECT proxy (agents behind a corporate proxy).

One setting decides every connection the agent opens to the server — enrollment, the CA fetch,
the control channel, session tunnels, update downloads, ``helpline agent doctor``:

* ``""`` (default): the environment, as curl and browsers read it — ``https_proxy`` /
  ``HTTPS_PROXY`` (or ``all_proxy``), skipped for hosts in ``no_proxy``;
* ``"direct"``: never a proxy, whatever the environment says;
* ``"http://[user:password@]host:port"``: that proxy. The password may be percent-encoded.

Only ``http://`` proxies: the agent asks for a ``CONNECT`` tunnel and runs TLS 1.3 with its own
certificate *inside* it, so the proxy sees the server's name and port and nothing else, and mutual
TLS is unchanged (a TLS-intercepting proxy fails the pinned verification, as it should: exempt the
server in its rules). Credentials go in ``Proxy-Authorization: Basic`` and never into a log line:
:func:`redact` is what logs show.
"""

from __future__ import annotations

import base64
import http.client
import ssl
import urllib.request
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

from .addresses import url_host

#: The setting that ignores the environment.
DIRECT = "direct"


class ProxyConfigError(ValueError):
    """The proxy setting cannot be used (its message never contains the password)."""


@dataclass(frozen=True)
class Proxy:
    """A parsed ``http://`` proxy."""

    host: str
    port: int
    username: str = ""
    password: str = ""

    @property
    def url(self) -> str:
        """The URL with credentials, for libraries that take one (websockets); never log it."""
        auth = ""
        if self.username or self.password:
            auth = f"{_quote(self.username)}:{_quote(self.password)}@"
        return f"http://{auth}{url_host(self.host)}:{self.port}"

    def authorization(self) -> dict[str, str]:
        """The ``Proxy-Authorization`` header for a CONNECT request ({} without credentials)."""
        if not (self.username or self.password):
            return {}
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return {"Proxy-Authorization": f"Basic {token}"}

    def __str__(self) -> str:
        user = f"{self.username}:***@" if (self.username or self.password) else ""
        return f"http://{user}{url_host(self.host)}:{self.port}"


def parse(url: str) -> Proxy:
    """Parse an explicit proxy URL; :class:`ProxyConfigError` says what is wrong without echoing secrets."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ProxyConfigError(f"the proxy URL is malformed ({redact(url)})") from exc
    if parts.scheme != "http":
        raise ProxyConfigError(f"only http:// proxies are supported (CONNECT; TLS runs inside the tunnel), got "
                               f"{parts.scheme or 'no scheme'}:// in {redact(url)}")
    if not parts.hostname:
        raise ProxyConfigError(f"the proxy URL names no host ({redact(url)})")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ProxyConfigError(f"a proxy URL is http://[user:password@]host:port, nothing after ({redact(url)})")
    return Proxy(parts.hostname, port or 8080, unquote(parts.username or ""), unquote(parts.password or ""))


def check_setting(setting: str) -> None:
    """Refuse a setting that can never work, at start-up rather than on the first connection."""
    if setting and setting != DIRECT:
        parse(setting)


def for_target(setting: str, host: str) -> Proxy | None:
    """The proxy to use for a connection to ``host`` under ``setting`` (None: connect directly)."""
    if setting == DIRECT:
        return None
    if setting:
        return parse(setting)
    found = urllib.request.getproxies()
    url = found.get("https") or found.get("all")
    if not url or urllib.request.proxy_bypass(host):
        return None
    if "://" not in url:
        url = "http://" + url  # the environment's habit: HTTPS_PROXY=proxy.example:3128
    return parse(url)


def websocket_proxy(setting: str, url: str) -> str | None:
    """The ``proxy=`` argument for :func:`websockets.asyncio.client.connect` (None: direct)."""
    proxy = for_target(setting, urlsplit(url).hostname or "")
    return proxy.url if proxy else None


def https_connection(host: str, port: int, *, context: ssl.SSLContext, timeout: float,
                     setting: str) -> http.client.HTTPSConnection:
    """An ``HTTPSConnection`` to ``host:port``, tunnelled through the proxy ``setting`` names, if any.

    TLS (with ``context``, verifying ``host``) runs end to end inside the tunnel.
    """
    proxy = for_target(setting, host)
    if proxy is None:
        return http.client.HTTPSConnection(host, port, context=context, timeout=timeout)
    connection = http.client.HTTPSConnection(proxy.host, proxy.port, context=context, timeout=timeout)
    connection.set_tunnel(host, port, headers=proxy.authorization())
    return connection


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for logs and error messages)."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.rsplit("@", 1)[1]
        return parts._replace(netloc=f"{parts.username}:***@{netloc}").geturl()
    except ValueError:
        return "<unparsable proxy URL>"


def _quote(value: str) -> str:
    return quote(value, safe="")


