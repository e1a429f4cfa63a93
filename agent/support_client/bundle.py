"""The support client's configuration bundle: the organisation's server and its pinned CA.

Downloaded by a technician from the console (``GET /api/v1/support-codes/bundle``) and handed
to the person with the code. Two keys, nothing secret::

    server = "https://helpline.example.org:8444"
    ca_sha256 = "6f1c…"   # SHA-256 of the org TLS root's certificate

The pin is what makes the connection impossible to intercept without the organisation's CA:
the client fetches the CA, keeps it only if its fingerprint matches, and then verifies the
server's chain against it alone (TLS 1.3, host name checked).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from certs.pinning import normalize_fingerprint

#: A bundle is a few lines; anything larger is not one.
MAX_BUNDLE_BYTES = 4096


class BundleError(ValueError):
    """The bundle file is missing, malformed or names something unusable."""


@dataclass(frozen=True)
class Bundle:
    server: str
    ca_sha256: str

    @property
    def host(self) -> str:
        return urlsplit(self.server).hostname or ""

    @property
    def port(self) -> int:
        return urlsplit(self.server).port or 443

    def wss(self, path: str) -> str:
        return f"wss://{urlsplit(self.server).netloc}{path}"

    @property
    def origin(self) -> str:
        return f"https://{urlsplit(self.server).netloc}"


def parse_bundle(text: str) -> Bundle:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BundleError(f"not a TOML bundle: {exc}") from exc
    unknown = set(data) - {"server", "ca_sha256"}
    if unknown:
        raise BundleError(f"unknown keys in the bundle: {', '.join(sorted(unknown))}")
    server, pin = data.get("server"), data.get("ca_sha256")
    if not isinstance(server, str) or not isinstance(pin, str):
        raise BundleError("the bundle needs server = \"https://…\" and ca_sha256 = \"…\"")
    parts = urlsplit(server)
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise BundleError(f"bad port in {server!r}") from exc
    if parts.scheme != "https" or not parts.hostname or parts.path not in ("", "/") or parts.query:
        raise BundleError(f"server must be https://host[:port], not {server!r}")
    try:
        pin = normalize_fingerprint(pin)
    except ValueError as exc:
        raise BundleError(f"ca_sha256: {exc}") from exc
    return Bundle(server.rstrip("/"), pin)


def load_bundle(path: Path) -> Bundle:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BundleError(f"cannot read the bundle {path}: {exc}") from exc
    if len(raw) > MAX_BUNDLE_BYTES:
        raise BundleError(f"{path} is larger than {MAX_BUNDLE_BYTES} bytes: not a support bundle")
    try:
        return parse_bundle(raw.decode())
    except UnicodeDecodeError as exc:
        raise BundleError(f"{path} is not UTF-8 text") from exc
