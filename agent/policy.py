"""The device admin's local session policy: rules the server cannot override.

A TOML file owned by the device's administrator (``AgentConfig.policy_file``)::

    require_prompt = true      # always ask the user, even under a grant
    allow_control = false      # view only, whatever the technician asks
    allow_unattended = false   # never accept grant (unattended) sessions
    prompt_timeout_s = 30      # no answer within this = Deny
    decline_cooldown_s = 60    # after a Deny (or no answer), the same technician's next
                               # request within this is refused at once, without a prompt (0 = off)
    allow_chat = true          # in-session toolkit (agent.toolkit): each can be switched off,
    allow_files = true         # whatever the technician or a grant asks
    allow_clipboard = true
    allow_shell = false        # remote shell (agent.shell) as the logged-in user; listed in the prompt
    allow_root_shell = false   # a root shell too (direct mode), for sessions consented for the shell
    shell_idle_timeout_s = 900 # a shell with no byte either way this long is hung up (1 .. 86400;
                               # the server's own shell_idle_timeout_s also applies: the shorter wins)
    allow_tools = true         # processes and services tabs (agent.tools); ending/starting also needs a control session
    max_file_mb = 1024         # largest file either way (1 .. 65536 MiB)

    [authority]                # signed documents: may only TIGHTEN the device's defaults
    min_approvals = 2          # distinct approvers on every document (1..16; default 1)
    four_eyes_for = ["all"]    # kinds that always need two approvers: grant, task, fix, release,
                               # approver_set, or "all" (groups, scripts and approver sets always do)
    require_user_verification = true   # passkey approvals carry the UV flag (the default; false is refused)
    max_grant_lifetime_s = 86400       # longest grant honoured (60 s .. 30 days, the default)
    max_revocation_validity_s = 14400  # longest revocation list validity (60 s .. 24 h, the default)
    proof_max_age_s = 60               # oldest technician proof (10 .. 120 s, the default)
    clock_skew_s = 10                  # how far ahead a signed time may be (0 .. 30 s, the default)

Nothing the server sends changes these values; the agent applies them before any grant
or prompt. A missing file means the defaults below; an unreadable or invalid file denies
every session (fail closed), with the reason logged. The ``[authority]`` table is read when the
agent starts (:meth:`LocalPolicy.load_strict`): a file that cannot be used, or a value that
would loosen a default, stops the agent with the reason instead of running on other rules.
"""

from __future__ import annotations

import logging
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocol.authority import DOCUMENT_KINDS, AuthorityPolicy

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
    allow_chat: bool = True
    allow_files: bool = True
    allow_clipboard: bool = True
    #: The remote shell (agent.shell): off unless the device's owner switches it on; as the logged-in user.
    allow_shell: bool = False
    #: A root shell on top (direct mode only), for sessions consented for the shell.
    allow_root_shell: bool = False
    #: A remote shell with no byte either way for this long is hung up, whatever the server allows.
    shell_idle_timeout_s: float = 900.0
    #: Processes and services (agent.tools): listing; changes also need a consented control session.
    allow_tools: bool = True
    #: Largest file transferred either way, in bytes.
    max_file_bytes: int = 1024 * 1024 * 1024
    #: Set when the file was unusable: every session is refused with this reason.
    broken: str = ""
    #: The ``[authority]`` table: the device's rules for signed documents, never looser than the defaults.
    authority: AuthorityPolicy = field(default_factory=AuthorityPolicy)

    @classmethod
    def load(cls, path: Path | None) -> LocalPolicy:
        """Read ``path`` (None or absent = defaults); a broken file yields a deny-all policy."""
        if path is None or not path.exists():
            return cls()
        try:
            return cls.parse(path.read_text())
        except (OSError, PolicyError) as exc:
            log.error("local session policy %s is unusable; refusing all sessions: %s", path, exc)
            return cls(allow_control=False, allow_unattended=False, require_prompt=True, allow_chat=False,
                       allow_files=False, allow_clipboard=False, allow_shell=False, allow_root_shell=False,
                       allow_tools=False, broken=str(exc))

    @classmethod
    def load_strict(cls, path: Path | None) -> LocalPolicy:
        """Read ``path`` at start (None or absent = defaults); raises PolicyError naming the file and the problem."""
        if path is None or not path.exists():
            return cls()
        try:
            return cls.parse(path.read_text())
        except (OSError, PolicyError) as exc:
            raise PolicyError(f"local policy file {path} is unusable: {exc}") from exc

    @classmethod
    def parse(cls, text: str) -> LocalPolicy:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise PolicyError(f"not valid TOML: {exc}") from exc
        known = {"require_prompt", "allow_control", "allow_unattended", "prompt_timeout_s", "decline_cooldown_s",
                 "authority", *_TOOLKIT_KEYS, "max_file_mb", "shell_idle_timeout_s"}
        unknown = set(data) - known
        if unknown:
            raise PolicyError(f"unknown keys: {', '.join(sorted(unknown))}")
        for key in ("require_prompt", "allow_control", "allow_unattended", *_TOOLKIT_KEYS):
            if key in data and not isinstance(data[key], bool):
                raise PolicyError(f"{key} must be true or false")
        timeout = data.get("prompt_timeout_s", 30.0)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 1 <= timeout <= 600:
            raise PolicyError("prompt_timeout_s must be a number of seconds between 1 and 600")
        cooldown = data.get("decline_cooldown_s", 60.0)
        if isinstance(cooldown, bool) or not isinstance(cooldown, (int, float)) or not 0 <= cooldown <= 86400:
            raise PolicyError("decline_cooldown_s must be a number of seconds between 0 and 86400")
        shell_idle = data.get("shell_idle_timeout_s", 900.0)
        if isinstance(shell_idle, bool) or not isinstance(shell_idle, (int, float)) or not 1 <= shell_idle <= 86400:
            raise PolicyError("shell_idle_timeout_s must be a number of seconds between 1 and 86400")
        max_mb = data.get("max_file_mb", 1024)
        if isinstance(max_mb, bool) or not isinstance(max_mb, int) or not 1 <= max_mb <= 65536:
            raise PolicyError("max_file_mb must be a whole number of MiB between 1 and 65536")
        return cls(
            allow_chat=bool(data.get("allow_chat", True)),
            allow_files=bool(data.get("allow_files", True)),
            allow_clipboard=bool(data.get("allow_clipboard", True)),
            allow_shell=bool(data.get("allow_shell", False)),
            allow_root_shell=bool(data.get("allow_root_shell", False)),
            shell_idle_timeout_s=float(shell_idle),
            allow_tools=bool(data.get("allow_tools", True)),
            max_file_bytes=max_mb * 1024 * 1024,
            require_prompt=bool(data.get("require_prompt", False)),
            allow_control=bool(data.get("allow_control", True)),
            allow_unattended=bool(data.get("allow_unattended", True)),
            prompt_timeout_s=float(timeout),
            decline_cooldown_s=float(cooldown),
            authority=parse_authority(data.get("authority", {})),
        )


#: Switches of the in-session toolkit (chat, file transfer, clipboard).
_TOOLKIT_KEYS = ("allow_chat", "allow_files", "allow_clipboard", "allow_shell", "allow_root_shell", "allow_tools")
#: The defaults the ``[authority]`` table may only tighten.
DEFAULT_AUTHORITY = AuthorityPolicy()
#: Numeric keys: (smallest value that still lets anything through, the default = the largest allowed).
_LIMITS: dict[str, tuple[float, float]] = {
    "max_grant_lifetime_s": (60.0, DEFAULT_AUTHORITY.max_grant_lifetime_s),
    "max_revocation_validity_s": (60.0, DEFAULT_AUTHORITY.max_revocation_validity_s),
    "proof_max_age_s": (10.0, DEFAULT_AUTHORITY.proof_max_age_s),
    "clock_skew_s": (0.0, DEFAULT_AUTHORITY.clock_skew_s),
}
#: A document carries at most this many approvals (protocol.authority.SignedDocument).
MAX_MIN_APPROVALS = 16


def parse_authority(table: Any) -> AuthorityPolicy:
    """The ``[authority]`` table as an :class:`AuthorityPolicy`; PolicyError for anything that would loosen the
    defaults or is not a value of the right kind."""
    if not isinstance(table, dict):
        raise PolicyError("authority must be a table ([authority])")
    unknown = set(table) - {"min_approvals", "four_eyes_for", "require_user_verification", *_LIMITS}
    if unknown:
        raise PolicyError(f"unknown keys in [authority]: {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    if "min_approvals" in table:
        count = table["min_approvals"]
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_MIN_APPROVALS:
            raise PolicyError(f"authority.min_approvals must be a whole number from 1 to {MAX_MIN_APPROVALS}")
        values["min_approvals"] = count
    if "four_eyes_for" in table:
        kinds = table["four_eyes_for"]
        if not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds):
            raise PolicyError("authority.four_eyes_for must be a list of document kinds")
        wrong = sorted(set(kinds) - DOCUMENT_KINDS - {"all"})
        if wrong:
            raise PolicyError(f"authority.four_eyes_for: unknown kinds {', '.join(wrong)} (known: "
                              f"{', '.join(sorted(DOCUMENT_KINDS))}, all)")
        chosen = DOCUMENT_KINDS if "all" in kinds else frozenset(kinds)
        values["four_eyes_kinds"] = DEFAULT_AUTHORITY.four_eyes_kinds | chosen
    if "require_user_verification" in table and table["require_user_verification"] is not True:
        raise PolicyError("authority.require_user_verification can only be true: the local policy may tighten "
                          "the device's defaults, never loosen them")
    for key, (lowest, default) in _LIMITS.items():
        if key not in table:
            continue
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise PolicyError(f"authority.{key} must be a finite number of seconds")
        if value > default:
            raise PolicyError(f"authority.{key} = {value:g} would loosen the device's default ({default:g} s); "
                              "the local policy may only tighten it")
        if value < lowest:
            raise PolicyError(f"authority.{key} must be at least {lowest:g} s")
        values[key] = float(value)
    return AuthorityPolicy(**values)
