"""Compose the agent: one control client and its features, each built here and handed what it needs.

The features — the device's authority (pinned root, verified documents, device audit),
inventory and health reporting, remote sessions, maintenance tasks — are
constructed with their dependencies passed in (the consent UI, the clock, the display) and
attached to the client's handler table in this order. Nothing is looked up by module name
or found again through a registry: :class:`Agent` holds the parts, and whoever built it (the
CLI, a test) reaches each part there.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from common.config import ConfigError
from common.proxy import for_target
from common.signals import stop_on_signals

from . import authority, reporting, sessions, wake
from .authority import feature as authority_feature
from .authority.feature import AuthorityFeature
from .clock import Clock, SystemClock
from .config import AgentConfig
from .consent import ConsentUI
from .consent.select import consent_ui
from .control_client import AgentClient, AgentRevoked
from .desktop.backend_report import ScreenBackendReport
from .help import survey
from .help.desk import HelpDesk
from .help.local_socket import SOCKET_NAME, LocalHelpSocket
from .policy import PolicyError
from .reporting import Reporter
from .sessions import AgentSessions
from .state import AgentState
from .tasks import feature as tasks
from .tasks.service import TaskService
from .tools import feature as tools
from .tools.feature import ToolsFeature
from .update import feature as update
from .update.feature import Updater
from .update.launcher import EXIT_RESTART
from .wake import WakeRelay

if TYPE_CHECKING:
    from .desktop.broker import DesktopBroker

log = logging.getLogger(__name__)

EXIT_REVOKED = 3
#: The local policy file is unusable (agent/policy.py).
EXIT_POLICY = 2
DESKTOPS = ("direct", "helper")


@dataclass(frozen=True)
class Agent:
    """The composed agent: the control client and the feature objects attached to it."""

    client: AgentClient
    authority: AuthorityFeature
    sessions: AgentSessions
    reporter: Reporter
    tasks: TaskService
    #: desktop = "helper": the broker of the users' session helpers (prompts, screen, files go there).
    desktop: DesktopBroker | None = None
    #: Signed self-update (agent/update/): offers, the trial's commit, the last outcome's report.
    updates: Updater | None = None
    #: Get help (agent/help/): the user's support requests and self-service fixes.
    help: HelpDesk | None = None


def build_agent(state: AgentState, config: AgentConfig, *, ui: ConsentUI | None = None,
                clock: Clock | None = None) -> Agent:
    """Build every part and attach it to one client (``ui`` None: agent.consent.select picks Tk or zenity)."""
    if config.desktop not in DESKTOPS:
        raise ConfigError(f"[agent] desktop must be one of {', '.join(DESKTOPS)}, not {config.desktop!r}")
    client = AgentClient(state, config)
    display = config.display or os.environ.get("DISPLAY")
    clock = clock if clock is not None else SystemClock()
    store = authority.build(state, config)
    broker = _desktop_broker(config) if config.desktop == "helper" else None
    if ui is None:
        ui = broker.ui if broker is not None else consent_ui(display)  # Tk on X; zenity on Wayland without X
    task_service = TaskService(client, authority=store)
    desk = HelpDesk(client, store, task_service)
    agent = Agent(
        client=client,
        authority=AuthorityFeature(client, store, clock=clock),
        sessions=AgentSessions(client, ui=ui, clock=clock, display=display, authority=store),
        reporter=Reporter(client),
        tasks=task_service,
        desktop=broker,
        updates=Updater(client, store, clock),
        help=desk,
    )
    desk.attach()
    if broker is not None:  # the root service: the screen and "who is there" come from the session helpers
        agent.sessions.screen_runner = broker.run_screen
        agent.sessions.asker = broker.nobody_to_ask
        client.background.append(broker.serve)
        broker.help = desk  # Get help reaches the service through the users' session helpers
        # The hello's screen backend, and device.screen_backend when a helper arrives or leaves later (issue 14).
        ScreenBackendReport(client, broker).attach()
    else:  # direct mode as root: the remote shell runs as the user counted as logged in (agent.shell)
        agent.sessions.screen_kwargs["shell_user"] = config.session_user
        client.background.append(LocalHelpSocket(desk, state.directory / SOCKET_NAME).serve)
    if broker is None:
        client.capability_sources.append(_screen_backend_source(display))
    agent.authority.on_change.append(agent.sessions.on_authority_changed)
    agent.authority.on_change.append(desk.refresh)  # fetch the scripts new self-service fixes name
    authority_feature.attach(agent.authority)
    sessions.attach(agent.sessions)
    reporting.attach(agent.reporter)
    tasks.attach(agent.tasks)
    wake.attach(WakeRelay(client))
    # The CSAT survey after a resolved request: a Tk window on the user's display (direct mode); the root
    # service draws on no display: the requester's session helper shows it, as them (agent.desktop.broker).
    survey.attach(survey.SurveyDesk(client, survey.tk_shower(display) if broker is None else broker.ask_survey))
    tools.attach(ToolsFeature(client, agent.sessions))
    assert agent.updates is not None
    update.attach(agent.updates)
    return agent


def _screen_backend_source(display: str | None) -> Callable[[], Awaitable[list[str]]]:
    """The hello's ``screen.backend:…`` capability in direct mode: what a session on this process's desktop
    would use (nothing without a desktop). The root service's is agent.desktop.backend_report's."""
    from protocol.screen_backend import capability

    async def source() -> list[str]:
        if not (display or os.environ.get("WAYLAND_DISPLAY")):
            return []
        from .screen.wayland.backend import describe_backend, screen_capabilities

        return await screen_capabilities(capability(await describe_backend(display)))

    return source


def _desktop_broker(config: AgentConfig) -> DesktopBroker:
    from .desktop.broker import DesktopBroker
    from .desktop.tracker import LogindTracker

    return DesktopBroker(LogindTracker(config.logind_bus), config.desktop_socket)


async def run_agent(state: AgentState, config: AgentConfig) -> int:
    try:
        agent = build_agent(state, config)
    except PolicyError as exc:  # the admin's rules cannot be read: run on none rather than on others
        log.error("the agent does not start", extra={"reason": str(exc)})
        print(f"helpline: {exc}; the agent does not start", file=sys.stderr)
        return EXIT_POLICY
    stop = stop_on_signals()
    client = agent.client
    proxy = for_target(config.proxy, urlsplit(state.agent_url).hostname or "")
    log.info("connecting to the server", extra={"url": state.agent_url, "proxy": str(proxy) if proxy else "none"})
    if agent.updates is not None:  # an installed update stops the agent; the launcher starts the new version
        agent.updates.on_restart = stop.set
    try:
        await client.run(stop)
    except AgentRevoked as exc:
        log.error("device revoked; the agent stops", extra={"reason": str(exc)})
        print(f"helpline: {exc}. Re-enroll this device to use it again.")
        return EXIT_REVOKED
    if agent.updates is not None and agent.updates.restart_requested:
        return EXIT_RESTART
    return 0
