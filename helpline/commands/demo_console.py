"""Demo step: the console admin account, and the first-run instructions a newcomer follows.

The instructions name everything needed to see a remote session within minutes: the URL, the
one-time credentials (password, TOTP secret, current code, QR code), the device to click
*Control* on, and where the consent prompt appears — on the demo's Xvfb, which nobody can look
at, so they give the one ``xdotool`` line that answers it like the device's user would.
"""

from __future__ import annotations

import contextlib
import shlex
import shutil
import sys
import time
from dataclasses import dataclass

import segno

from agent.consent.tk_app import PROMPT_TITLE
from server.accounts import admin, totp, users
from server.config import ServerConfig
from server.errors import ApiError
from server.store import Database

from .common import with_database

ADMIN_NAME = "admin"


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str
    totp_secret: str


@dataclass(frozen=True)
class DemoInfo:
    """What the instructions point at."""

    config: ServerConfig
    credentials: Credentials
    device_id: str
    hostname: str
    ca_fingerprint: str
    #: The Xvfb the demo started (":N"), or None.
    xvfb_display: str | None
    #: The desktop the agent inherited ($DISPLAY), when the demo did not start one.
    desktop_display: str | None


def create_admin(config: ServerConfig) -> Credentials:
    """Create the console account ``admin``, or give it a fresh password and TOTP secret."""
    password, secret = with_database(config, _admin_credentials)
    return Credentials(ADMIN_NAME, password, secret)


async def _admin_credentials(db: Database) -> tuple[str, str]:
    try:
        # The demo's throwaway admin logs in with the password it prints (no first-login change).
        created = await admin.create_account(db, ADMIN_NAME, "admin", actor="demo", must_change=False)
        return created.password, created.totp_secret
    except ApiError as exc:
        if exc.code != "user_exists":
            raise
    password = await admin.reset_password(db, ADMIN_NAME, actor="demo", must_change=False)
    secret = totp.new_secret()
    async with db.transaction() as tx:
        row = await users.require_user(tx, ADMIN_NAME)
        await users.set_totp_secret(tx, row["id"], secret)
        await tx.execute("UPDATE users SET disabled = 0, failed_logins = 0, locked_until = NULL WHERE id = ?",
                         (row["id"],))
    return password, secret


def answer_command(display: str) -> str:
    """The shell line that clicks Allow on the consent prompt of ``display`` (Tab focuses Allow, Space presses it).

    ``--onlyvisible``: the prompt's window exists, titled and withdrawn, while it is sized and placed
    (``tk_app._place``); keys sent to it then are lost, and the prompt waits for an answer that already went."""
    return (f"DISPLAY={display} xdotool search --sync --onlyvisible --name {shlex.quote(PROMPT_TITLE)} "
            "windowfocus --sync key Tab space")


def print_first_steps(info: DemoInfo) -> None:
    """Print the QR code, then the numbered steps from opening the console to seeing the device's screen."""
    creds, config = info.credentials, info.config
    uri = totp.provisioning_uri(creds.totp_secret, creds.username)
    print()
    print(f"TOTP for '{creds.username}' — scan into an authenticator app (or use the secret below):")
    with contextlib.suppress(OSError, UnicodeEncodeError):
        segno.make(uri, error="l").terminal(compact=True)
    print(f"  TOTP URI       {uri}")
    print()
    print("Helpline demo is running. Your first five minutes:")
    print(f" 1. Open the console   {config.console_url}/")
    print("    The browser warns: the demo's own CA signed the certificate. Accept the warning, or import")
    print(f"    {config.pki_path / 'ca.pem'} as a trusted CA.")
    print(" 2. Log in")
    print(f"      username       {creds.username}")
    print(f"      password       {creds.password}   (shown once; run the demo again for new credentials)")
    print(f"      TOTP secret    {creds.totp_secret}")
    print(f"      TOTP code now  {totp.code_at(creds.totp_secret, time.time())}   (changes every 30 s; later: "
          f"python -c \"import pyotp; print(pyotp.TOTP('{creds.totp_secret}').now())\")")
    print(f" 3. Devices → {info.hostname} (device {info.device_id}) → Control → give a reason → Ask the user.")
    _print_prompt_step(info)
    print(" 5. The viewer shows the device's screen (the demo desktop says \"This is the device's screen\");")
    print("    click into it to control it; End session stops it.")
    print()
    print(f"  agent listener  wss://localhost:{config.agent_port}/agent (mutual TLS)")
    print(f"  CA fingerprint  {info.ca_fingerprint}")
    print(f"  data and logs   {config.data_dir}  ({config.data_dir / 'logs'})")
    print(f"  CLI             helpline admin device list --data {config.data_dir}")
    print("Press Ctrl-C to stop: the demo stops every process it started.")
    sys.stdout.flush()


def _print_prompt_step(info: DemoInfo) -> None:
    if info.xvfb_display is not None:
        print(f" 4. Accept the prompt on display {info.xvfb_display} (the demo's virtual screen, where user "
              "'demo' counts as logged in).")
        print("    Nobody can see that screen, so answer it like the device's user would, from this machine:")
        print(f"      {answer_command(info.xvfb_display)}")
        if shutil.which("xdotool") is None:
            print("    (needs xdotool: apt-get install xdotool)")
    elif info.desktop_display is not None:
        print(f" 4. Accept the prompt that appears on this desktop (display {info.desktop_display}): click Allow.")
    else:
        print(" 4. No display here, so Control ends with \"no display to show the consent prompt on\".")
        print("    Install xvfb, xdotool and python3-tk and run the demo again for a virtual screen.")
