"""``helpline agent enroll-from-config | doctor | session-helper`` — an agent installed from the package.

The package's service runs ``enroll-from-config`` before ``run``: a device enrolls itself from
what the administrator deployed (``/etc/helpline/agent.toml`` and a token file) and does nothing
once enrolled. ``doctor`` checks the installation.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_CONFIG = Path("/etc/helpline/agent.toml")


def register_agent(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    enroll = sub.add_parser("enroll-from-config", help="enroll from the deployed config unless already enrolled",
                            description="Enroll this device from the [enrollment] table of the config (server_url, "
                            "ca_sha256, token_file) and its [agent] trust_root_sha256. Does nothing when the device "
                            "is already enrolled, so the service can run it before every start.")
    enroll.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help=f"default {DEFAULT_CONFIG}")
    enroll.set_defaults(handler=_enroll_from_config)

    doctor = sub.add_parser("doctor", help="check this installation (one line per check)",
                            description="Check the config, the state directory's permissions, the pinned roots, the "
                            "certificate, the server over mutual TLS, the clock; report the display and the session "
                            "helper. Exits 1 when a check fails.")
    doctor.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help=f"default {DEFAULT_CONFIG}")
    doctor.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the server (default 10)")
    doctor.set_defaults(handler=_doctor)

    helper = sub.add_parser("session-helper", help="the per-user session helper (run as the user, in the session)",
                            description="Runs in each graphical session as that user: shows the consent prompt and "
                            "the indicator, runs the screen session and saves files handed to the user, only when "
                            "the root service asks (desktop = \"helper\"). Exits 2 when the service refuses it.")
    helper.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help=f"default {DEFAULT_CONFIG}")
    helper.add_argument("--socket", type=Path, help="the service's socket (default: desktop_socket of the config)")
    helper.add_argument("--session-id", help="this logind session (default $XDG_SESSION_ID)")
    helper.add_argument("--display", help="this session's X display (default $DISPLAY)")
    helper.set_defaults(handler=_session_helper)


def _enroll_from_config(args: argparse.Namespace) -> int:
    from agent.config import AgentConfig
    from agent.deployment import load_enrollment
    from agent.state import AgentState
    from common.config import ConfigError, load_config

    from .agent import enroll_or_report

    config = load_config(AgentConfig, args.config, section="agent")
    state = AgentState(config.state_dir)
    if state.is_enrolled():
        print(f"already enrolled as device {state.device_id}; state in {config.state_dir}")
        return 0
    deployment = load_enrollment(args.config)
    if deployment is None:
        raise ConfigError(f"{args.config} has no [enrollment] table and {config.state_dir} holds no identity")
    result = enroll_or_report(deployment.server_url, deployment.read_token(), deployment.ca_sha256, state,
                              config.trust_root_sha256, config.proxy)
    if result is None:
        return 1
    print(f"enrolled as device {result.device_id} in group {result.group}; the token file "
          f"{deployment.token_file} is spent and may be deleted")
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from agent.doctor import Doctor, report

    return report(Doctor(args.config, timeout_s=args.timeout).run())


def _session_helper(args: argparse.Namespace) -> int:
    import asyncio
    import os

    from agent.config import AgentConfig
    from agent.desktop.helper import EXIT_REFUSED, SessionHelper
    from common.config import load_config
    from common.logs import setup_logging
    from common.signals import stop_on_signals

    readable = args.config if os.access(args.config, os.R_OK) else None
    config = load_config(AgentConfig, readable, section="agent")
    setup_logging(config.log_format, config.log_level)
    if os.getuid() == 0:
        print("helpline: the session helper runs as the session's user, never as root", file=sys.stderr)
        return 1
    display = args.display or os.environ.get("DISPLAY", "")
    session_id = args.session_id or os.environ.get("XDG_SESSION_ID", "") or _own_session(config.logind_bus, display)
    if not session_id:
        print("helpline: no logind session: set XDG_SESSION_ID or pass --session-id (logind knows no single "
              f"graphical session of this user showing {display or 'a display'})", file=sys.stderr)
        return 1
    helper = SessionHelper(args.socket or config.desktop_socket, session_id, display,
                           wayland=os.environ.get("WAYLAND_DISPLAY", ""))

    async def serve() -> int:
        return await helper.run(stop_on_signals())

    code = asyncio.run(serve())
    if code == EXIT_REFUSED:
        print(f"helpline: the agent service refused this session helper: {helper.refusal}", file=sys.stderr)
    return code


def _own_session(bus: str, display: str) -> str:
    """This user's graphical session on ``display``, asked of logind (a systemd user unit has no XDG_SESSION_ID)."""
    import asyncio
    import os

    from agent.desktop.tracker import LogindTracker, TrackerUnavailable, own_session

    try:
        sessions = asyncio.run(LogindTracker(bus).sessions())
    except TrackerUnavailable as exc:
        print(f"helpline: {exc}", file=sys.stderr)
        return ""
    found = own_session(sessions, os.getuid(), display)
    return found.session_id if found is not None else ""
