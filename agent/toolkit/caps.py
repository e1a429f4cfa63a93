"""What one session's toolkit may do, decided once by the agent from consent, grant and local policy (pure).

The capabilities are part of consent: an attended session gets what the local policy allows and
the prompt listed; an unattended one only what its signed grant names too (``files``,
``clipboard``; chat needs somebody at the device and no grant action). Whatever the server or
the technician asks later, the agent refuses the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from protocol.authority import UnattendedGrant
from protocol.toolkit import CAPABILITIES

from ..policy import LocalPolicy

#: The shell idle timeout when the service's value is missing or out of range (1 .. 86400 s, as in the policy).
_DEFAULT_IDLE_S = LocalPolicy.shell_idle_timeout_s
_MAX_IDLE_S = 86400.0


@dataclass(frozen=True)
class ToolkitCaps:
    """The toolkit rights of one session and why any is missing."""

    allowed: frozenset[str] = frozenset()
    max_file_bytes: int = 0
    #: Capability → why it is refused (shown to the technician in ``toolkit.caps``).
    refused: dict[str, str] = field(default_factory=dict)
    #: Paths the technician may fetch without asking (a ``files`` grant's ``paths``); empty = ask the user.
    fetch_paths: tuple[str, ...] = ()
    #: Unattended: nobody to ask, so a fetch outside ``fetch_paths`` is refused.
    unattended: bool = False
    #: The shell may run as root when asked (``allow_root_shell`` and a session consented for the shell).
    root_shell: bool = False
    #: The shell is hung up after this long with no byte either way (policy ``shell_idle_timeout_s``).
    shell_idle_s: float = _DEFAULT_IDLE_S

    def listed(self) -> list[str]:
        """The allowed capabilities in the prompt's order."""
        return [cap for cap in CAPABILITIES if cap in self.allowed]

    def to_wire(self) -> dict[str, object]:
        return {"allowed": self.listed(), "max_file_bytes": self.max_file_bytes, "refused": dict(self.refused),
                "fetch_paths": list(self.fetch_paths), "unattended": self.unattended,
                "shell_idle_s": self.shell_idle_s}

    @classmethod
    def from_wire(cls, data: dict[str, object]) -> ToolkitCaps:
        """Back from :meth:`to_wire` (service → session helper); anything unknown is dropped, never widened."""
        allowed = data.get("allowed", [])
        refused = data.get("refused", {})
        paths = data.get("fetch_paths", [])
        size = data.get("max_file_bytes", 0)
        idle = data.get("shell_idle_s")
        return cls(
            allowed=frozenset(c for c in allowed if c in CAPABILITIES) if isinstance(allowed, list) else frozenset(),
            max_file_bytes=size if isinstance(size, int) and size > 0 else 0,
            refused={str(k): str(v)[:200] for k, v in refused.items()} if isinstance(refused, dict) else {},
            fetch_paths=tuple(str(p) for p in paths) if isinstance(paths, list) else (),
            unattended=data.get("unattended") is True,
            shell_idle_s=float(idle) if isinstance(idle, (int, float)) and not isinstance(idle, bool)
            and 0 < idle <= _MAX_IDLE_S else _DEFAULT_IDLE_S,
        )


def decide_caps(policy: LocalPolicy, grant: UnattendedGrant | None) -> ToolkitCaps:
    """The toolkit rights of a session consented under ``policy`` (and ``grant`` when unattended)."""
    switches = {"chat": policy.allow_chat, "files": policy.allow_files, "clipboard": policy.allow_clipboard,
                "shell": policy.allow_shell}
    allowed: set[str] = set()
    refused: dict[str, str] = {}
    for cap in CAPABILITIES:
        if policy.broken or not switches[cap]:
            refused[cap] = "off by this device's policy"
        elif grant is not None and cap != "chat" and cap not in grant.actions:
            refused[cap] = f"grant {grant.grant_id} does not name {cap!r}"
        else:
            allowed.add(cap)
    paths = tuple(grant.paths) if grant is not None and "files" in allowed else ()
    return ToolkitCaps(frozenset(allowed), policy.max_file_bytes if "files" in allowed else 0, refused, paths,
                       unattended=grant is not None, root_shell="shell" in allowed and policy.allow_root_shell,
                       shell_idle_s=policy.shell_idle_timeout_s)
