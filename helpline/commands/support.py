"""``helpline support CODE`` — get one attended session from the organisation's help desk, without enrolling.

The person at a machine that is not enrolled (a contractor's laptop, a personal computer) runs
it with the code a technician reads to them and the bundle downloaded from the console. See
:mod:`agent.support_client.client` for what it does and does not do.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

DEFAULT_BUNDLE = Path("helpline-support.toml")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "support", help="one attended support session with a code (no enrollment)",
        description="Connect this machine to your organisation's help desk for ONE attended session, with the "
        "code a technician gave you. Nothing is installed or enrolled: you are asked before the technician sees "
        "your screen, a window shows while they do, and 'End session' (or quitting this command) ends it at once. "
        "The bundle file (from your organisation's console) names the server and pins its certificate authority, "
        "so nobody in between can pose as the server.")
    parser.add_argument("code", help="the support code, e.g. '482 193 775 031' (spaces and dashes are ignored)")
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE,
                        help=f"the support bundle from the console (default: ./{DEFAULT_BUNDLE})")
    parser.add_argument("--display", help="X display to show the prompt on and share (default: $DISPLAY)")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    import ssl

    from agent.consent.tk import TkConsentUI
    from agent.support_client.bundle import BundleError, load_bundle
    from agent.support_client.client import SupportRefused, default_display, run_support
    from certs.errors import CertError
    from common.logs import setup_logging

    setup_logging("human", "info")
    code = "".join(ch for ch in args.code if ch not in " -\t")
    if not code.isdigit() or not 9 <= len(code) <= 18:
        print("helpline support: a support code is 9 to 18 digits", file=sys.stderr)
        return 2
    try:
        bundle = load_bundle(args.bundle)
    except BundleError as exc:
        print(f"helpline support: {exc}", file=sys.stderr)
        return 2
    display = args.display or default_display()
    if not display:
        print("helpline support: no display ($DISPLAY): the session needs a screen to ask you on", file=sys.stderr)
        return 2
    try:
        outcome = asyncio.run(run_support(bundle, code, ui=TkConsentUI(display), display=display))
    except SupportRefused as exc:
        print(f"helpline support: refused: {exc}", file=sys.stderr)
        return 3
    except (CertError, ssl.SSLError) as exc:
        print(f"helpline support: cannot verify the server ({exc}); not connecting", file=sys.stderr)
        return 4
    except OSError as exc:
        print(f"helpline support: cannot reach {bundle.server}: {exc}", file=sys.stderr)
        return 5
    except KeyboardInterrupt:
        return 130
    print(f"Session over: {outcome.reason or 'no session was started'}")
    return 0
