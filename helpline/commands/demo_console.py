"""Demo step: a console admin account, and a virtual display for the agent on headless machines.

Prints the console URL with one-time credentials (password, TOTP secret, otpauth URI and a
terminal QR code). Without a display but with Xvfb installed, it starts ``Xvfb`` with a small
sample window before the agent starts, so the agent inherits ``DISPLAY``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import segno

from server.accounts import admin, totp, users
from server.accounts.users import AccountError
from server.config import ServerConfig
from server.store import Database

from .common import with_database

ADMIN_NAME = "admin"
XVFB_SIZE = "1280x800x24"
READY_TIMEOUT_S = 10.0
#: Where every X server puts its lock file and socket (fixed by X11, not a temp file we create).
X11_TMP = Path("/tmp")  # noqa: S108

SAMPLE_WINDOW = """
import time, tkinter as tk
root = tk.Tk(); root.title("Helpline demo desktop"); root.geometry("640x360+300+200")
root.configure(bg="#f4f6fa")
tk.Label(root, text="This is the device's screen", font=("DejaVu Sans", 20, "bold"), bg="#f4f6fa").pack(pady=24)
clock = tk.Label(root, font=("DejaVu Sans Mono", 28), bg="#f4f6fa"); clock.pack()
entry = tk.Entry(root, font=("DejaVu Sans", 14), width=32); entry.pack(pady=20); entry.insert(0, "type here remotely")
def tick():
    clock.config(text=time.strftime("%H:%M:%S")); root.after(500, tick)
tick(); root.mainloop()
"""


def run(config: ServerConfig, data: Path, children: list[subprocess.Popen[bytes]], step: Callable[[str], None]
        ) -> None:
    step(f"creating console account '{ADMIN_NAME}' (admin) with one-time credentials")
    password, secret = with_database(config, _admin_credentials)
    uri = totp.provisioning_uri(secret, ADMIN_NAME)
    print()
    print(f"Console:        {config.console_url}   (the browser will warn: the org CA is not in its trust store;")
    print(f"                import {config.pki_path / 'ca.pem'} or accept the warning for this demo)")
    print(f"  username      {ADMIN_NAME}")
    print(f"  password      {password}    (shown once)")
    print(f"  TOTP secret   {secret}")
    print(f"  TOTP URI      {uri}")
    print(f"  code now      {totp.code_at(secret, time.time())}   (later: python -c \"import pyotp; "
          f"print(pyotp.TOTP('{secret}').now())\")")
    with contextlib.suppress(OSError, UnicodeEncodeError):
        segno.make(uri, error="l").terminal(compact=True)
    sys.stdout.flush()


async def _admin_credentials(db: Database) -> tuple[str, str]:
    """Create the demo admin, or give an existing one a fresh password and TOTP secret."""
    try:
        created = await admin.create_account(db, ADMIN_NAME, "admin", actor="demo")
        return created.password, created.totp_secret
    except AccountError as exc:
        if exc.code != "user_exists":
            raise
    password = await admin.reset_password(db, ADMIN_NAME, actor="demo")
    secret = totp.new_secret()
    async with db.transaction() as tx:
        row = await users.require_user(tx, ADMIN_NAME)
        await users.set_totp_secret(tx, row["id"], secret)
        await tx.execute("UPDATE users SET disabled = 0, failed_logins = 0, locked_until = NULL WHERE id = ?",
                         (row["id"],))
    return password, secret


def before_agent(data: Path, children: list[subprocess.Popen[bytes]], step: Callable[[str], None]) -> None:
    """Give the agent a display: start Xvfb with a sample window when the machine has none."""
    if os.environ.get("DISPLAY"):
        return
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        step("no display and no Xvfb: remote sessions need a display (apt-get install xvfb xdotool python3-tk)")
        return
    display = _free_display()
    logs = data / "logs"
    step(f"no display: starting Xvfb {display} ({XVFB_SIZE}) with a sample window for remote sessions")
    children.append(subprocess.Popen([xvfb, display, "-screen", "0", XVFB_SIZE, "-nolisten", "tcp"],
                                     stdout=subprocess.DEVNULL, stderr=(logs / "xvfb.log").open("ab")))
    if not _wait_socket(display):
        step(f"Xvfb {display} did not come up; see {logs}/xvfb.log")
        return
    os.environ["DISPLAY"] = display
    children.append(subprocess.Popen([sys.executable, "-c", SAMPLE_WINDOW], stdout=subprocess.DEVNULL,
                                     stderr=(logs / "sample-window.log").open("ab")))


def _free_display() -> str:
    for n in range(90, 200):
        if not (X11_TMP / f".X{n}-lock").exists() and not (X11_TMP / ".X11-unix" / f"X{n}").exists():
            return f":{n}"
    raise RuntimeError("no free X display number between :90 and :199")


def _wait_socket(display: str) -> bool:
    deadline = time.monotonic() + READY_TIMEOUT_S
    sock = X11_TMP / ".X11-unix" / f"X{display.lstrip(':')}"
    while time.monotonic() < deadline:
        if sock.exists():
            return True
        time.sleep(0.05)  # polling a file with a deadline
    return False

