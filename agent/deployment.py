"""What an administrator deploys to a fleet: ``/etc/helpline/agent.toml`` and an enrollment token file.

The packaged agent enrolls itself from this file on its first start (``helpline agent
enroll-from-config``, the unit's ``ExecStartPre``), so devices need no interactive step. The file's
``[agent]`` table is the agent's ordinary configuration (:class:`~agent.config.AgentConfig`,
with ``trust_root_sha256`` — the org trust root's fingerprint, the pin that reaches the device with
what the administrator deploys, not from a server answer). Its ``[enrollment]`` table says where
and how to enroll::

    [enrollment]
    server_url = "https://helpline.example.org:8444"   # the console URL
    ca_sha256 = "6f1c…"                                # the org TLS root's fingerprint
    token_file = "/etc/helpline/enrollment-token"      # one-time token, root-only (0600)

The token is read from a file rather than written into the TOML so the TOML can be world-readable
and the token file deleted once the device has enrolled.
"""

from __future__ import annotations

import os
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from common.config import ConfigError

#: Where the package's units look for it.
DEFAULT_CONFIG = Path("/etc/helpline/agent.toml")
#: A token file larger than this is not a token.
MAX_TOKEN_BYTES = 4096
_KEYS = {"server_url", "ca_sha256", "token_file"}


@dataclass(frozen=True)
class Enrollment:
    """The ``[enrollment]`` table, checked."""

    server_url: str
    ca_sha256: str
    token_file: Path

    def read_token(self) -> str:
        """The token, refusing a file other users could read or write (it enrolls a device into a group)."""
        try:
            info = self.token_file.stat()
        except FileNotFoundError as exc:
            raise ConfigError(f"enrollment token file {self.token_file} not found") from exc
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(f"enrollment token file {self.token_file} is readable by others "
                              f"(mode {stat.S_IMODE(info.st_mode):04o}); chmod 600 it")
        if info.st_uid != os.geteuid():
            raise ConfigError(f"enrollment token file {self.token_file} is not owned by this user")
        with self.token_file.open("rb") as handle:
            raw = handle.read(MAX_TOKEN_BYTES + 1)
        if len(raw) > MAX_TOKEN_BYTES:
            raise ConfigError(f"enrollment token file {self.token_file} is too large to hold a token")
        token = raw.decode("ascii", errors="replace").strip()
        if not token or any(c.isspace() for c in token):
            raise ConfigError(f"enrollment token file {self.token_file} holds no single token")
        return token


def normalize_fingerprint(text: str) -> str:
    """``AB:CD …`` → ``abcd…``; raises ConfigError unless 64 hex digits remain."""
    fingerprint = text.replace(":", "").replace(" ", "").strip().lower()
    if len(fingerprint) != 64 or any(c not in "0123456789abcdef" for c in fingerprint):
        raise ConfigError("ca_sha256: a fingerprint is 64 hex digits (colons and spaces allowed)")
    return fingerprint


def load_enrollment(path: Path) -> Enrollment | None:
    """The ``[enrollment]`` table of ``path``; None when the file has none. Raises ConfigError when invalid."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} not found") from exc
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path}: {exc}") from exc
    table = data.get("enrollment")
    if table is None:
        return None
    if not isinstance(table, dict):
        raise ConfigError("[enrollment] must be a table")
    unknown = set(table) - _KEYS
    missing = _KEYS - set(table)
    if unknown:
        raise ConfigError(f"unknown [enrollment] keys: {', '.join(sorted(unknown))}")
    if missing:
        raise ConfigError(f"[enrollment] lacks {', '.join(sorted(missing))}")
    if not all(isinstance(table[key], str) for key in _KEYS):
        raise ConfigError("[enrollment] values are strings")
    url = table["server_url"].rstrip("/")
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ConfigError(f"server_url: {url!r} is not an https:// URL")
    token_file = Path(table["token_file"])
    if not token_file.is_absolute():
        raise ConfigError("token_file: give an absolute path")
    return Enrollment(url, normalize_fingerprint(table["ca_sha256"]), token_file)
