"""TOTP (RFC 6238, 30 s steps, 6 digits) where each code is accepted once.

The caller stores the last accepted time step per user and only accepts a strictly later
step, so a code seen over a shoulder or replayed from a log is useless within its window.
"""

from __future__ import annotations

import hmac
import io

import pyotp
import segno

ISSUER = "Helpline"
STEP_S = 30
#: Steps of clock drift tolerated either side.
DRIFT_STEPS = 1


def new_secret() -> str:
    return pyotp.random_base32()


def provisioning_uri(secret: str, username: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=ISSUER)


def code_at(secret: str, now: float) -> str:
    return pyotp.TOTP(secret).at(int(now))


def matching_step(secret: str, code: str, now: float, last_step: int) -> int | None:
    """The time step ``code`` belongs to if valid now and later than ``last_step``; else None."""
    code = code.strip().replace(" ", "")
    if not (len(code) == 6 and code.isdigit()):
        return None
    totp = pyotp.TOTP(secret)
    current = int(now) // STEP_S
    found: int | None = None
    for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
        # compare every candidate so timing does not reveal which one matched
        if hmac.compare_digest(totp.at(step * STEP_S), code) and step > last_step:
            found = step
    return found


def qr_svg(uri: str) -> str:
    """The otpauth URI as a standalone SVG QR code (segno, no external resources)."""
    buffer = io.BytesIO()
    segno.make(uri, error="m").save(buffer, kind="svg", scale=5, border=2, xmldecl=False, svgns=True,
                                     dark="#111111", light="#ffffff")
    return buffer.getvalue().decode()
