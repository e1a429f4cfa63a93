"""Origins and stream paths shared by the server and the CLI, so both decide "same node" alike.

A browser's ``Origin`` is ``scheme://host[:port]`` with the host lower-cased and the scheme's default port
left out; a console stream URL (``wss://``/``ws://``) belongs to the ``https``/``http`` origin of its host.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

#: A session's stream path on the console; group 1 is the session id.
STREAM_PATH = re.compile(r"^/api/v1/sessions/([A-Za-z0-9._:-]{1,128})/stream$")

_PAGE_SCHEME = {"wss": "https", "ws": "http"}
_DEFAULT_PORT = {"https": 443, "http": 80}


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` as a browser sends it in ``Origin`` (a stream URL gives its console's origin).

    Raises ValueError for a URL whose port is not a number (``urlsplit``'s own check).
    """
    parts = urlsplit(url)
    scheme = _PAGE_SCHEME.get(parts.scheme, parts.scheme)
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    shown = f":{port}" if port and port != _DEFAULT_PORT.get(scheme) else ""
    return f"{scheme}://{host}{shown}"
