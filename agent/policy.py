"""The device admin's local session policy: rules the server cannot override.

A TOML file owned by the device's administrator (``AgentConfig.policy_file``)::

    require_prompt = true      # always ask the user, even under a grant
    allow_control = false      # view only, whatever the technician asks
    allow_unattended = false   # never accept grant (unattended) sessions
    prompt_timeout_s = 30      # no answer within this = Deny
    decline_cooldown_s = 60    # after a Deny (or no answer), the same technician's next
                               # request within this is refused at once, without a prompt (0 = off)

Nothing the server sends changes these values; the agent applies them before any grant
or prompt. A missing file means the defaults below; an unreadable or invalid file denies
every session (fail closed), with the reason logged.
"""

from __future__ import annotations

import logging
import tomllib
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


class PolicyError(Exception):
    """The policy file exists but cannot be used."""


@dataclass(frozen=True)
class LocalPolicy:
    require_prompt: bool = False
    allow_control: bool = True
    allow_unattended: bool = True
    prompt_timeout_s: float = 30.0
    #: After the user declined a technician (Deny or no answer), that technician's requests are refused
    #: without a prompt for this long: repeated requests must not wear the user down (0 = no cooldown).
    decline_cooldown_s: float = 60.0
    #: Set when the file was unusable: every session is refused with this reason.
    broken: str = ""

    @classmethod
    def load(cls, path: Path | None) -> LocalPolicy:
        """Read ``path`` (None or absent = defaults); a broken file yields a deny-all policy."""
        if path is None or not path.exists():
            return cls()
        try:
            return cls.parse(path.read_text())
        except (OSError, PolicyError) as exc:
            log.error("local session policy %s is unusable; refusing all sessions: %s", path, exc)
            return cls(allow_control=False, allow_unattended=False, require_prompt=True, broken=str(exc))

    @classmethod
    def parse(cls, text: str) -> LocalPolicy:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise PolicyError(f"not valid TOML: {exc}") from exc
        known = {"require_prompt", "allow_control", "allow_unattended", "prompt_timeout_s", "decline_cooldown_s"}
        unknown = set(data) - known
        if unknown:
            raise PolicyError(f"unknown keys: {', '.join(sorted(unknown))}")
        for key in ("require_prompt", "allow_control", "allow_unattended"):
            if key in data and not isinstance(data[key], bool):
                raise PolicyError(f"{key} must be true or false")
        timeout = data.get("prompt_timeout_s", 30.0)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 1 <= timeout <= 600:
            raise PolicyError("prompt_timeout_s must be a number of seconds between 1 and 600")
        cooldown = data.get("decline_cooldown_s", 60.0)
        if isinstance(cooldown, bool) or not isinstance(cooldown, (int, float)) or not 0 <= cooldown <= 86400:
            raise PolicyError("decline_cooldown_s must be a number of seconds between 0 and 86400")
        return cls(
            require_prompt=bool(data.get("require_prompt", False)),
            allow_control=bool(data.get("allow_control", True)),
            allow_unattended=bool(data.get("allow_unattended", True)),
            prompt_timeout_s=float(timeout),
            decline_cooldown_s=float(cooldown),
        )
