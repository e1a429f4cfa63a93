"""Local user accounts and groups from /etc/passwd and /etc/group (personal data).

Read from the files themselves, not NSS (``pwd.getpwall``), so directory-service users
(LDAP, SSSD) who never logged in here are not enumerated from the whole directory: the
inventory lists the machine's own accounts, as GLPI's ``LOCAL_USERS``/``LOCAL_GROUPS`` do.
``system`` marks accounts below UID_MIN from /etc/login.defs (1000 when unset) and ``nobody``.
Password hashes live in /etc/shadow and are never read. When a device's group does not
collect personal data the agent leaves this section out (:mod:`agent.inventory`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.collectors._util import read_text

PASSWD = Path("/etc/passwd")
GROUP = Path("/etc/group")
LOGIN_DEFS = Path("/etc/login.defs")
DEFAULT_UID_MIN = 1000
NOBODY_UID = 65534
MAX_ENTRIES = 4096


def uid_min(login_defs: str | None) -> int:
    """UID_MIN from login.defs text (the first account uid that is a person's), else 1000."""
    for line in (login_defs or "").splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "UID_MIN" and fields[1].isdigit():
            return int(fields[1])
    return DEFAULT_UID_MIN


def parse_passwd(text: str, first_uid: int = DEFAULT_UID_MIN) -> list[dict[str, Any]]:
    """``name:x:uid:gid:gecos:home:shell`` lines → accounts; NIS ``+``/``-`` lines and bad ids skipped."""
    users = []
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) != 7 or not fields[0] or fields[0][0] in "+-#":
            continue
        name, _pw, uid, gid, gecos, home, shell = fields
        if not uid.isdigit() or not gid.isdigit():
            continue
        users.append({
            "name": name,
            "uid": int(uid),
            "gid": int(gid),
            "full_name": gecos.split(",", 1)[0].strip() or None,
            "home": home or None,
            "shell": shell or None,
            "system": int(uid) < first_uid or int(uid) == NOBODY_UID,
        })
    return users[:MAX_ENTRIES]


def parse_group(text: str) -> list[dict[str, Any]]:
    """``name:x:gid:member,member`` lines → groups with their listed members."""
    groups = []
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) != 4 or not fields[0] or fields[0][0] in "+-#" or not fields[2].isdigit():
            continue
        members = [m for m in fields[3].split(",") if m][:MAX_ENTRIES]
        groups.append({"name": fields[0], "gid": int(fields[2]), "members": members})
    return groups[:MAX_ENTRIES]


def collect_accounts(passwd: Path = PASSWD, group: Path = GROUP, login_defs: Path = LOGIN_DEFS) -> dict[str, Any]:
    """Accounts and groups in file order; a file that cannot be read gives an empty list and a reason."""
    unavailable: dict[str, str] = {}
    passwd_text, reason = read_text(passwd)
    if reason:
        unavailable["users"] = reason
    group_text, reason = read_text(group)
    if reason:
        unavailable["groups"] = reason
    defs_text, _ = read_text(login_defs)
    return {
        "users": parse_passwd(passwd_text or "", uid_min(defs_text)),
        "groups": parse_group(group_text or ""),
        "unavailable": unavailable,
    }
