"""``helpline help`` — ask IT for help from this device (the Get help window, or ``--send`` for scripts)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DESCRIPTION = """\
Opens the Get help window: describe the problem, choose how urgent it is, look at the screenshot
before deciding to attach it, and send it to your IT support; then follow your request (waiting,
claimed by a technician, resolved), add to it or withdraw it. The window also lists the fixes your
organisation approved for you to run yourself (clear temporary files, restart a service, flush
DNS, install pending updates); one that did not help is sent on as a request with the attempt.

It talks to the running agent: through your session helper when the agent runs as a system
service, else through the agent's socket in its state directory.

  helpline help --send "printer offline" --urgency high [--no-screenshot]   (for scripts: no window)
  helpline help --list                                                      (your requests, one a line)
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("help", help="ask IT for help from this device (the Get help window)",
                            description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--send", metavar="TEXT", help="send a request with this summary, without the window")
    parser.add_argument("--list", action="store_true", help="print your requests and their status, one a line")
    parser.add_argument("--details", default="", metavar="TEXT", help="more about the problem (with --send)")
    parser.add_argument("--urgency", choices=["low", "normal", "high", "critical"], default="normal")
    parser.add_argument("--no-screenshot", action="store_true",
                        help="take no screenshot (the window also has a checkbox)")
    parser.add_argument("--socket", type=Path, help="the agent's help socket (default: found automatically)")
    parser.add_argument("--state", type=Path, help="the agent's state directory, for a direct-mode agent")
    parser.add_argument("--config", type=Path, help="the agent's TOML config ([agent] state_dir)")
    parser.add_argument("--display", help="X display of the window and the screenshot (default $DISPLAY)")
    parser.add_argument("--events", action="store_true", help=argparse.SUPPRESS)  # JSON lines on stdout (tests)
    parser.set_defaults(handler=_help)


def _state_dir(args: argparse.Namespace) -> Path:
    if args.state is not None:
        return Path(args.state)
    from agent.config import AgentConfig
    from common.config import load_config

    readable = args.config if args.config is not None and os.access(args.config, os.R_OK) else None
    return load_config(AgentConfig, readable, section="agent").state_dir


def _help(args: argparse.Namespace) -> int:
    from agent.help.client import HelpUnavailable, find_socket

    path = find_socket(args.socket, _state_dir(args))
    display = args.display or os.environ.get("DISPLAY")
    try:
        if args.send is not None:
            return _send(path, args, display)
        if args.list:
            return _list(path)
        from agent.help.window import run_window

        return run_window(path, display, events=args.events, screenshot=not args.no_screenshot)
    except HelpUnavailable as exc:
        print(f"helpline: {exc}", file=sys.stderr)
        return 1


def _send(path: Path, args: argparse.Namespace, display: str | None) -> int:
    from agent.help import wire
    from agent.help.client import HelpClient
    from protocol.requests import MAX_DETAILS, MAX_SUMMARY

    summary = " ".join(args.send.split())[:MAX_SUMMARY]
    if not summary:
        print("helpline: --send needs a summary", file=sys.stderr)
        return 2
    screenshot = None
    if not args.no_screenshot:
        from agent.help.screenshot import capture

        try:
            screenshot = capture(display) or None
        except Exception as exc:  # no display: the request goes without one, and says so
            print(f"helpline: no screenshot ({type(exc).__name__}: {exc}); sending without one", file=sys.stderr)
    client = HelpClient(path)
    try:
        reply = client.call(wire.Open(call=client.number(), summary=summary, details=args.details[:MAX_DETAILS],
                                      urgency=args.urgency, screenshot=screenshot))
    finally:
        client.close()
    if isinstance(reply, wire.Opened):
        print(f"request sent ({reply.local_id}){' with a screenshot' if screenshot else ''}")
        return 0
    reason = reply.reason if isinstance(reply, wire.Failed) else type(reply).__name__
    print(f"helpline: the request was not sent: {reason}", file=sys.stderr)
    return 1


def _list(path: Path) -> int:
    from agent.help import wire
    from agent.help.client import HelpClient
    from agent.help.text import status_line

    client = HelpClient(path)
    try:
        reply = client.call(wire.GetState(call=client.number()))
    finally:
        client.close()
    if not isinstance(reply, wire.State):
        print(f"helpline: {reply.reason if isinstance(reply, wire.Failed) else type(reply).__name__}", file=sys.stderr)
        return 1
    for view in reply.requests:
        print(f"{view.local_id} {view.state} {status_line(view)}")
    return 0
