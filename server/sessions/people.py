"""Who is in a running session: the roster behind join, hand-off and leave (pure, no I/O).

Theory of operation
-------------------
The technician who requested a session starts as its only viewer and its **controller** (the
one technician whose input, file, clipboard and shell messages the relay passes on; whether
input is injected still depends on the consented mode). The controller **invites** a colleague,
or a colleague **asks** to join; once both happened the device is asked (a new consent
question, unless the user allowed "my helpdesk may bring colleagues"), and only its Allow
**admits** the joiner as a view-only viewer. The controller may **hand** control to an admitted
viewer who holds ``remote_control`` on the group; the previous controller stays a viewer. Anyone
**leaves**; a controller who leaves without handing over ends control: the session goes on view
only for those left (nobody can take control again), and ends when nobody is left.

Every verb returns a refusal string ("" when it was applied), so the API answers with it and
the audit records it; the caller checks rights, this class checks the roster.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from protocol.session import MAX_PEOPLE


@dataclass
class People:
    controller: str | None
    #: Admitted technicians in the order they came (the controller among them).
    viewers: list[str]
    #: Invited technician → who invited them (until they are admitted or refused).
    invited: dict[str, str] = field(default_factory=dict)
    #: Technicians who asked to join and wait for an invitation.
    asking: set[str] = field(default_factory=set)
    #: Technicians the device is being asked about right now.
    joining: set[str] = field(default_factory=set)
    #: Viewers that hold ``remote_control`` on the session's group (read from their account when they joined).
    may_control: set[str] = field(default_factory=set)
    #: Of those asking: their role (for the device's question) and whether they hold ``remote_control``.
    roles: dict[str, str] = field(default_factory=dict)
    may_control_asked: set[str] = field(default_factory=set)

    @classmethod
    def starting(cls, technician: str, may_control: bool) -> People:
        return cls(technician, [technician], may_control={technician} if may_control else set())

    def invite(self, by: str, user: str) -> str:
        if by != self.controller:
            return "only the controlling technician may invite"
        if user in self.viewers:
            return f"{user} is already in the session"
        if len(self.viewers) + len(self.joining) >= MAX_PEOPLE:
            return f"a session holds at most {MAX_PEOPLE} technicians"
        self.invited[user] = by
        return ""

    def ask(self, user: str) -> str:
        """A technician asks to join; "" when they may go to the device now (they were invited)."""
        if user in self.viewers:
            return f"{user} is already in the session"
        if user in self.joining:
            return "the device is already being asked"
        if user not in self.invited:
            self.asking.add(user)
            return "asked"
        return ""

    def start_join(self, user: str) -> None:
        self.asking.discard(user)
        self.joining.add(user)

    def join_answered(self, user: str, admitted: bool, may_control: bool) -> None:
        self.joining.discard(user)
        self.invited.pop(user, None)
        self.roles.pop(user, None)
        self.may_control_asked.discard(user)
        if admitted and user not in self.viewers:
            self.viewers.append(user)
            if may_control:
                self.may_control.add(user)

    def hand(self, by: str, to: str) -> str:
        if by != self.controller:
            return "only the controlling technician may hand control over"
        if to not in self.viewers:
            return f"{to} is not in the session"
        if to == by:
            return f"{to} already controls"
        if to not in self.may_control:
            return f"{to} lacks remote_control on the device's group"
        return ""

    def handed(self, to: str) -> None:
        self.controller = to

    def leave(self, user: str) -> str:
        if user not in self.viewers:
            return f"{user} is not in the session"
        self.viewers.remove(user)
        if self.controller == user:
            self.controller = None
        return ""

    def view(self) -> dict[str, object]:
        return {"controller": self.controller, "viewers": list(self.viewers), "invited": sorted(self.invited),
                "asking": sorted(self.asking), "joining": sorted(self.joining)}
