"""Host names and addresses as they go into URLs (IPv6 literals in brackets, RFC 3986)."""

from __future__ import annotations


def url_host(host: str) -> str:
    """``host`` for the authority part of a URL: ``::1`` → ``[::1]``; names and IPv4 unchanged."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def url(scheme: str, host: str, port: int, path: str = "") -> str:
    """``scheme://host:port/path`` with ``host`` bracketed when it is an IPv6 literal."""
    return f"{scheme}://{url_host(host)}:{port}{path}"
