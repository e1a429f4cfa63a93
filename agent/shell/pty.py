"""Start a login shell on a fresh pty, as a given user (the blocking, OS-facing half of the remote shell).

The child gets the pty's slave as stdin/stdout/stderr and as its controlling terminal in a new
session, so the line discipline turns ``\\x03`` into SIGINT for the foreground job and closing
the master hangs the whole session up. When the agent runs as root the child drops to the
target user (groups, gid, then uid: ``subprocess`` does it in that order) before it executes
anything; a non-root agent (a session helper) can only start its own user's shell.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import struct
import subprocess
import termios
from dataclasses import dataclass


class ShellRefused(Exception):
    """The shell cannot start for this user (unknown user, root where not allowed)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Pty:
    """A running shell: its process and the pty master the agent reads and writes."""

    process: subprocess.Popen[bytes]
    master: int
    tty: str
    user: str
    uid: int


def resolve_user(name: str | None, *, root: bool) -> pwd.struct_passwd:
    """Who the shell runs as: root when asked (and allowed by the caller), else ``name``; a non-root agent is its
    own user whatever is named (it cannot become anybody else)."""
    euid = os.geteuid()
    if root:
        if euid != 0:
            raise ShellRefused("root_refused", "this agent does not run as root")
        return pwd.getpwuid(0)
    if euid != 0:
        return pwd.getpwuid(euid)
    if not name:
        raise ShellRefused("no_user", "nobody is logged in to run the shell as")
    try:
        entry = pwd.getpwnam(name)
    except KeyError as exc:
        raise ShellRefused("no_user", f"no such user {name!r}") from exc
    if entry.pw_uid == 0:
        raise ShellRefused("root_refused", "the logged-in user is root; a root shell needs allow_root_shell")
    return entry


def set_size(fd: int, cols: int, rows: int) -> None:
    """TIOCSWINSZ: the kernel sends the foreground process group SIGWINCH."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _controlling_tty() -> None:  # runs in the child, after setsid and the user switch
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def spawn(user: pwd.struct_passwd, cols: int, rows: int) -> Pty:
    """A login shell of ``user`` on a new pty of ``cols`` x ``rows``, in the user's home with a clean environment."""
    master, slave = os.openpty()
    try:
        set_size(master, cols, rows)
        tty = os.ttyname(slave)
        if os.geteuid() == 0:
            os.fchown(slave, user.pw_uid, -1)  # the user's own terminal (mesg, write-back of stty)
        shell = user.pw_shell if user.pw_shell and os.access(user.pw_shell, os.X_OK) \
            and not user.pw_shell.endswith(("nologin", "false")) else "/bin/sh"
        path = "/usr/local/bin:/usr/bin:/bin" + (":/usr/local/sbin:/usr/sbin:/sbin" if user.pw_uid == 0 else "")
        env = {"HOME": user.pw_dir, "USER": user.pw_name, "LOGNAME": user.pw_name, "SHELL": shell,
               "TERM": "xterm-256color", "LANG": os.environ.get("LANG", "C.UTF-8"), "PATH": path}
        switch = os.geteuid() == 0 and user.pw_uid != os.geteuid()
        groups = os.getgrouplist(user.pw_name, user.pw_gid) if switch else None
        cwd = user.pw_dir if os.path.isdir(user.pw_dir) else "/"
        process = subprocess.Popen(
            [shell, "-l"], stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env, close_fds=True,
            start_new_session=True, preexec_fn=_controlling_tty,
            user=user.pw_uid if switch else None, group=user.pw_gid if switch else None, extra_groups=groups)
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)
    os.set_blocking(master, False)
    return Pty(process, master, tty, user.pw_name, user.pw_uid)
