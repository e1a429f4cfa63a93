"""``helpline agent`` — enroll this device and run the agent."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from common.config import ConfigError, load_config
from common.logs import setup_logging

from . import agent_install, agent_inventory, agent_launch

if TYPE_CHECKING:
    from agent.config import AgentConfig
    from agent.enroll import EnrollResult
    from agent.state import AgentState

#: Extra ``helpline agent …`` actions, each a module with ``register_agent(subparsers)``.
AGENT_ACTIONS = (agent_inventory, agent_install, agent_launch)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("agent", help="enroll and run the device agent")
    agent_sub = parser.add_subparsers(dest="agent_command", metavar="ACTION", required=True)

    enroll = agent_sub.add_parser("enroll", help="enroll this device with a one-time token",
                                  description="Create this device's key (it never leaves the device), send a "
                                  "certificate request with the token, and store the certificate. The server's CA "
                                  "is trusted only if its SHA-256 fingerprint matches --ca-sha256.")
    enroll.add_argument("url", help="console URL, e.g. https://helpline.example.org:8444")
    enroll.add_argument("token", help="one-time enrollment token (hlt_…)")
    enroll.add_argument("--ca-sha256", required=True, metavar="HEX", help="fingerprint of the org CA")
    enroll.add_argument("--root-sha256", metavar="HEX",
                        help="fingerprint of the org trust root ('helpline trust init' prints it): the only root whose "
                        "signed documents this device honours for unattended access (trust_root_sha256 in the "
                        "configuration takes precedence)")
    _state_options(enroll)
    enroll.set_defaults(handler=_enroll)

    run = agent_sub.add_parser("run", help="run the agent: connect, report, keep alive, reconnect",
                               description="Connect to the server over mutual TLS and stay connected: "
                               "reconnects with exponential backoff (full jitter, cap 60 s) after any failure, "
                               "renews its certificate, exits with status 3 if the device is revoked.")
    _state_options(run)
    run.add_argument("--log-format", choices=["human", "json"])
    run.set_defaults(handler=_run)
    for action in AGENT_ACTIONS:
        action.register_agent(agent_sub)


def _state_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state", type=Path, help="agent state directory (default /var/lib/helpline-agent)")
    parser.add_argument("--config", type=Path, help="TOML config file ([agent] table)")


def agent_config(args: argparse.Namespace) -> AgentConfig:
    """The agent's configuration; a proxy setting that can never work is refused here, not on first use."""
    from agent.config import AgentConfig
    from common.proxy import ProxyConfigError, check_setting

    config = load_config(AgentConfig, args.config, section="agent",
                         overrides={"state_dir": args.state, "log_format": getattr(args, "log_format", None)})
    try:
        check_setting(config.proxy)
    except ProxyConfigError as exc:
        raise ConfigError(f"proxy: {exc}") from exc
    return config


def enroll_or_report(url: str, token: str, ca_sha256: str, state: AgentState,
                     root_sha256: str | None, proxy: str = "") -> EnrollResult | None:
    """Enroll; on a refusal or failure print one line saying why and return None."""
    from agent.enroll import EnrollmentFailed, enroll
    from certs.errors import CertError

    try:
        return enroll(url, token, ca_sha256, state, root_sha256=root_sha256, proxy=proxy)
    except EnrollmentFailed as exc:
        print(f"helpline: enrollment refused: {exc.message} ({exc.code})", file=sys.stderr)
    except (CertError, ValueError, OSError) as exc:
        print(f"helpline: enrollment failed: {exc}", file=sys.stderr)
    return None


def _enroll(args: argparse.Namespace) -> int:
    from agent.state import AgentState

    config = agent_config(args)
    setup_logging(config.log_format, config.log_level)
    result = enroll_or_report(args.url, args.token, args.ca_sha256, AgentState(config.state_dir), args.root_sha256,
                              config.proxy)
    if result is None:
        return 1
    print(f"enrolled as device {result.device_id} in group {result.group}; state in {config.state_dir}")
    if config.trust_root_sha256 or args.root_sha256:
        print(f"unattended access only under documents from trust root {config.trust_root_sha256 or args.root_sha256}")
    else:
        print("no trust root fingerprint (--root-sha256 or trust_root_sha256): this device honours no unattended "
              "access; attended sessions work as before")
    print(f"start it with: helpline agent run --state {config.state_dir}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from agent.runtime import run_agent
    from agent.state import AgentState

    config = agent_config(args)
    setup_logging(config.log_format, config.log_level)
    state = AgentState(config.state_dir)
    if not state.is_enrolled():
        print(f"helpline: this device is not enrolled (no identity in {config.state_dir}); "
              "run 'helpline agent enroll URL TOKEN --ca-sha256 HEX' first", file=sys.stderr)
        return 1
    return asyncio.run(run_agent(state, config))

