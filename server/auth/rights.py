"""Rights per device group, as named flags (never raw bitmasks)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Right(enum.Flag):
    NONE = 0
    VIEW_INVENTORY = enum.auto()
    REMOTE_VIEW = enum.auto()
    REMOTE_CONTROL = enum.auto()
    RUN_TASKS = enum.auto()
    MANAGE_GRANTS = enum.auto()
    APPROVE_GRANTS = enum.auto()
    ADMINISTER = enum.auto()
    #: Replay any session recording of the group (auditors); a session's own technician may
    #: replay it with remote_view alone.
    VIEW_RECORDINGS = enum.auto()

    @classmethod
    def parse(cls, names: list[str]) -> Right:
        value = cls.NONE
        for name in names:
            try:
                value |= cls[name.strip().upper()]
            except KeyError as exc:
                raise ValueError(f"unknown right {name!r}; known: {', '.join(cls.names())}") from exc
        return value

    @classmethod
    def names(cls) -> list[str]:
        return [r.name.lower() for r in cls if r.name and r is not cls.NONE]

    def as_names(self) -> list[str]:
        return [r.name.lower() for r in Right if r.name and r is not Right.NONE and r in self]


ALL_RIGHTS = Right.VIEW_INVENTORY | Right.REMOTE_VIEW | Right.REMOTE_CONTROL | Right.RUN_TASKS \
    | Right.MANAGE_GRANTS | Right.APPROVE_GRANTS | Right.ADMINISTER | Right.VIEW_RECORDINGS

#: Default rights a role gets on the groups it is assigned to.
ROLE_RIGHTS: dict[str, Right] = {
    "admin": ALL_RIGHTS,
    "technician": Right.VIEW_INVENTORY | Right.REMOTE_VIEW | Right.REMOTE_CONTROL | Right.RUN_TASKS
    | Right.MANAGE_GRANTS,
    "viewer": Right.VIEW_INVENTORY,
}

#: Pseudo-group meaning "every device group".
ANY_GROUP = "*"


@dataclass(frozen=True)
class Principal:
    """An authenticated caller and its rights, per device group (``*`` = all groups)."""

    user_id: str
    username: str
    role: str
    rights_by_group: dict[str, Right] = field(default_factory=dict)
    #: Cookie session id (None for API tokens); lets logout/disable close its websockets.
    session_id: str | None = None
    #: Logged in with a generated password not yet changed: the enforcing middleware lets this
    #: caller reach only the password change, ``/auth/me`` and logout.
    must_change_password: bool = False
    #: The API token's id (``t_…``) when the caller authenticated with one (None for cookie sessions): a node
    #: forwarding the caller's call re-checks and audits the token there (server/sessions/calls.py).
    token_id: str | None = None

    def rights_on(self, group: str) -> Right:
        return self.rights_by_group.get(group, Right.NONE) | self.rights_by_group.get(ANY_GROUP, Right.NONE)

    def can(self, right: Right, group: str | None = None) -> bool:
        """``group=None`` asks "on at least one group"."""
        if group is None:
            return any(right in r for r in self.rights_by_group.values())
        return right in self.rights_on(group)

    def groups_with(self, right: Right) -> set[str] | None:
        """Groups where ``right`` holds; None means all groups."""
        if right in self.rights_by_group.get(ANY_GROUP, Right.NONE):
            return None
        return {g for g, r in self.rights_by_group.items() if right in r}

    @property
    def is_admin(self) -> bool:
        return Right.ADMINISTER in self.rights_by_group.get(ANY_GROUP, Right.NONE)
