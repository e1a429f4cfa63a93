"""The portal's restore token, kept per user so an approved device need not ask the portal again.

The xdg-desktop-portal hands out a restore token when a session was started with
``persist_mode`` 2 and the desktop keeps such permissions (KDE Plasma, xdg-desktop-portal-gnome
from 44 on; Debian 12's 43 returns none). Tokens are single use: each ``Start`` that presented
one returns its successor, or nothing when the portal refused it. So the rule is simply: after
every ``Start`` the stored token becomes what came back — a new token is written, none deletes
the old one. The file lives in the user's own state directory (``$XDG_STATE_HOME/helpline``,
default ``~/.local/state/helpline``), written by the per-user session helper that runs the
capture, mode 0600 in a 0700 directory, replaced atomically. It is a capability to share this
user's screen without the portal's dialog, so it is never logged.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

from .portal import valid_token

log = logging.getLogger(__name__)

FILE_NAME = "portal-restore-token.json"
#: The file is tiny; anything larger is not ours and is not read.
MAX_FILE_BYTES = 4096


def default_path(env: Mapping[str, str] | None = None) -> Path:
    """``$XDG_STATE_HOME/helpline/portal-restore-token.json`` (default ``~/.local/state/helpline/…``)."""
    env = os.environ if env is None else env
    state = env.get("XDG_STATE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".local" / "state")
    return Path(state) / "helpline" / FILE_NAME


class RestoreTokenStore:
    """Load, replace and drop the one restore token of this user."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_path()

    def load(self) -> str | None:
        """The stored token, or None (missing, unreadable, too large, not ours: all mean "ask the portal")."""
        try:
            with open(self.path, "rb") as handle:
                raw = handle.read(MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("portal restore token %s unreadable: %s", self.path, exc)
            return None
        if len(raw) > MAX_FILE_BYTES:
            return None
        try:
            data = json.loads(raw)
        except ValueError:
            return None
        return valid_token(data.get("restore_token")) if isinstance(data, dict) else None

    def replace(self, token: str | None) -> None:
        """After a ``Start``: keep ``token`` (the portal's new one), or drop the stored one when none came back."""
        token = valid_token(token)
        if token is None:
            self.drop()
            return
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_name(f".{FILE_NAME}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump({"restore_token": token}, handle)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        log.info("portal restore token stored in %s", self.path)

    def drop(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
            log.info("portal restore token dropped (%s)", self.path)
