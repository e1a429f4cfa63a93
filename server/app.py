"""The Helpline server: two TLS listeners in one asyncio process.

* agent listener (``agent_port``, default 8443): mutual TLS, client certificate required,
  control channels and session tunnels;
* console listener (``console_port``, default 8444): server-authenticated TLS, enrollment,
  REST API under ``/api/v1``, the technician console.

Features (inventory, sessions, console, tasks …) are composed explicitly in
:meth:`HelplineServer._compose`: each has ``setup(server)`` that declares its routes (with the
right each needs, :mod:`server.api`), agent message handlers and background tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from typing import Any

from aiohttp import web

from certs import tls
from certs.pki import PkiPaths
from common.addresses import url
from common.files import private_directory
from common.signals import stop_on_signals
from protocol.control import CloseCode

from . import api, audit, devices, issuer, net, shared_keys
from .agent_channel import SERVER_KEY, AgentConnection, AgentHandlers, control_channel
from .api import context as api_context
from .api.openapi import document_for
from .audit_limits import AuditThrottle
from .bus import node as bus_node
from .config import ServerConfig
from .connections import ConnectionRegistry
from .events import EventWatcher
from .ops import lock as server_lock
from .presence import Presence
from .requests.events import RequestEvents
from .requests.repository import REQUEST_CHANGED
from .store import Database, open_database

log = logging.getLogger(__name__)

#: asyncio's TLS transport allocates a 256 KiB read buffer per connection; with thousands of
#: idle agents that dominates memory. A TLS record is at most 16 KiB, so 32 KiB reads lose
#: nothing. Measured with benchmarks/connect_agents.py 2000: 313 → 89 KiB of server RSS per agent.
TLS_READ_BUFFER = 32 * 1024


def _shrink_tls_buffers() -> None:
    import asyncio.sslproto

    if asyncio.sslproto.SSLProtocol.max_size > TLS_READ_BUFFER:
        asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER

class HelplineServer:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        shared_keys.require_files(config)  # several nodes: refuse before a feature makes a key of its own
        self.pki = PkiPaths.from_dir(config.pki_path)
        self.ca = issuer.load(config)  # refuses a PKI directory holding the root's key, or an expired one
        self.db: Database = None  # type: ignore[assignment]  # set in start()
        self.connections = ConnectionRegistry()
        self.presence = Presence(lambda: self.db, self.connections, sweep_s=config.presence_sweep_s,
                                 stale_s=config.presence_stale_s)
        #: Bounds the audit records unauthenticated requests (enrollment, login) can add.
        self.audit_throttle = AuditThrottle()
        self.agent_handlers = AgentHandlers()
        self.on_agent_ready: list[Callable[[AgentConnection], Awaitable[None]]] = []
        #: Committed support-request events, for whoever reacts to them (server/requests/events.py).
        self.request_events = RequestEvents()
        self.background: list[Callable[[], Coroutine[Any, Any, None]]] = []
        self.inventory_checksums_provider: Callable[[str], Awaitable[dict[str, str] | None]] | None = None
        self.agent_app = web.Application(client_max_size=64 * 1024)
        self.console_app = web.Application(client_max_size=2 * 1024 * 1024)
        for app in (self.agent_app, self.console_app):
            app[SERVER_KEY] = self
        for app in (self.agent_app, self.console_app):
            api.install(app)
        self.console_app[api_context.ORIGINS] = self._console_origins
        api.add_routes(self.agent_app, [api.Route("GET", "/agent", control_channel, api.DEVICE_CERT,
                                                  summary="Agent control channel (websocket, mTLS)")])
        api.add_routes(self.console_app, [api.Route("GET", "/api/v1/openapi.json", openapi_document, api.PUBLIC,
                                                    summary="This document", response=dict[str, Any])])
        self.watcher: EventWatcher | None = None
        #: More than one node (server/bus): set in start() when ``nats_url`` is.
        self.bus: bus_node.NodeBus | None = None
        self._runners: list[web.AppRunner] = []
        #: Both listeners accept connections (``/readyz``); false before start() and from stop().
        self.listening = False
        self.gate: net.Gatekeeper | None = None  # caps and timeouts of both listeners, set in start()
        self._tasks: list[asyncio.Task[None]] = []
        self._lock_fd: int | None = None  # the running-server lock (server/ops/lock.py), held from start() to stop()
        self.agent_port = config.agent_port
        self.console_port = config.console_port
        if config.single_port:  # agents and the console on one port, routed by the TLS server name
            self.agent_port = self.console_port = config.single_port
            _check_agent_name(self.pki, config.agent_name)
        self._compose()

    def _compose(self) -> None:
        """Every feature, in the order their routes and handlers are added."""
        from . import (
            accounts,
            authority,
            cmdb,
            console_api,
            console_static,
            enroll_api,
            ops,
            passkeys,
            recovery_api,
            renewal,
            sessions,
            tickets,
        )
        from .kpis import feature as kpis
        from .lifecycle import feature as lifecycle
        from .requests import feature as requests
        from .sessions import recordings_api
        from .support_codes import feature as support_codes
        from .tasks import feature as tasks
        from .tools import feature as tools
        from .updates import feature as updates

        for feature in (issuer, enroll_api, renewal, sessions, recordings_api, authority, tasks, tools, updates, cmdb,
                        recovery_api,  # expired device certificates proven back on the console port (issue 20)
                        requests,  # support requests (issue 18)
                        kpis,  # the support desk's numbers and the CSAT survey (issue 19)
                        support_codes,  # support codes for devices not enrolled (issue 18)
                        tickets,  # after sessions: hooks the session end (issue 19)
                        lifecycle,  # after sessions, recordings and tasks: shared storage, retention, purge (20)
                        accounts, passkeys, console_api, console_static, ops):  # ops last: it counts the others
            feature.setup(self)

    def _console_origins(self, _request: web.Request) -> set[str]:
        """Origins allowed to open console websockets besides the request's own host."""
        return {self.console_url, *self.config.allowed_origins}

    @property
    def console_url(self) -> str:
        """The console's public URL with the port actually bound (IPv6 literals bracketed)."""
        return url("https", self.config.public_host, self.console_port)

    @property
    def agent_url(self) -> str:
        """Where agents connect (mutual TLS), as enrollment hands it out."""
        return url("wss", self.config.public_host, self.agent_port, "/agent")

    @property
    def agent_server_name(self) -> str:
        """The TLS server name agents send to reach the agent route of a single port ("" with two ports)."""
        return self.config.agent_name if self.config.single_port else ""

    @property
    def device_cert_lifetime(self) -> timedelta:
        return timedelta(days=self.config.device_cert_days)

    async def inventory_checksums(self, device_id: str) -> dict[str, str] | None:
        if self.inventory_checksums_provider is None:
            return None
        return await self.inventory_checksums_provider(device_id)

    async def start(self) -> None:
        _shrink_tls_buffers()
        private_directory(self.config.data_dir)  # the database, recordings and keys live below it
        self._lock_fd = server_lock.hold_shared(self.config.data_dir)  # before the database: refused mid-restore
        self.db = await open_database(self.config.db_url)
        await shared_keys.check_recorded(self.config, self.db)  # several nodes: the same keys as the first
        audit.attach_anchor(self.db, audit.anchor_path(self.config.data_dir))  # the chain's head, kept outside
        for app in (self.agent_app, self.console_app):
            app[api_context.DB] = self.db
        if not self.config.nats_url:  # other nodes hold live channels: the presence sweep clears stale flags
            await devices.mark_all_offline(self.db)
        self.watcher = EventWatcher(self.db)
        await self.watcher.start_from_now()
        self.watcher.on(devices.DEVICE_REVOKED, self._on_device_revoked)
        self.watcher.on(REQUEST_CHANGED, self.request_events.deliver)
        self.bus = await bus_node.attach(self)  # nats_url set: rings on commit, holder answers, routed sessions
        for app in (self.agent_app, self.console_app):
            app[api_context.DB] = self.db  # the bus wraps it to ring after commits
        self.background.append(self.watcher.run)
        self.background.append(self.presence.run)
        self.background.append(lambda: audit.keep_anchored(self.db))
        self.background.append(lambda: self.audit_throttle.run(self.db))
        agent_ssl = tls.agent_listener_context(self.pki.ca_pem, self.pki.server_pem, self.pki.server_key)
        console_ssl = tls.console_listener_context(self.pki.server_pem, self.pki.server_key)
        self.tls_contexts = [agent_ssl, console_ssl]  # a renewed intermediate's chain is loaded into these (issuer)
        self.gate = net.Gatekeeper(net.ConnectionLimits.from_config(self.config, net.raise_fd_limit()))
        two_ports = [("agent", self.agent_app, self.config.agent_port, agent_ssl),
                     ("console", self.console_app, self.config.console_port, console_ssl)]
        if self.config.single_port:
            await self._listen_single_port()
            two_ports = []
        for name, app, port, ctx in two_ports:
            runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2)
            await runner.setup()
            site = net.GuardedSite(runner, self.config.host, port, gate=self.gate, listener=name, ssl_context=ctx)
            await site.start()
            self._runners.append(runner)
        # Port 0 in tests: read back the ports the OS chose.
        self.agent_port = self._bound_port(0) or self.config.agent_port
        self.console_port = self._bound_port(1) or self.config.console_port
        if self.config.single_port:
            self.agent_port = self.console_port = self._bound_port(1) or self.config.single_port
        self.listening = True
        for factory in self.background:
            self._tasks.append(asyncio.create_task(factory()))
        log.info("server listening", extra={"agent_port": self.agent_port, "console_port": self.console_port,
                                            "database": self.config.db_url.split(":", 1)[0]})

    async def _listen_single_port(self) -> None:
        """One listener for both applications (server/net/sni.py): the agent runner has no site of its
        own; the console runner's site hands it the connections that ask for the agent name."""
        from .net.sni import SniSite

        assert self.gate is not None
        agent_ssl, console_ssl = tls.single_port_contexts(self.pki.ca_pem, self.pki.server_pem, self.pki.server_key,
                                                          self.config.agent_name)
        runners = [web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2)
                   for app in (self.agent_app, self.console_app)]
        for runner in runners:
            await runner.setup()
            self._runners.append(runner)
        site = SniSite(runners[1], self.config.host, self.config.single_port, gate=self.gate,
                       console_context=console_ssl, agent_runner=runners[0], agent_context=agent_ssl,
                       agent_name=self.config.agent_name)
        await site.start()
        self.tls_contexts = [agent_ssl, console_ssl]  # a renewed intermediate's chain is loaded into these (issuer)

    def _bound_port(self, index: int) -> int | None:
        server = self._runners[index].server
        sites = list(self._runners[index].sites)
        if not sites or server is None:
            return None
        srv = getattr(sites[0], "_server", None)
        if srv is None or not srv.sockets:
            return None
        port: int = srv.sockets[0].getsockname()[1]
        return port

    async def stop(self) -> None:
        self.listening = False
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.connections.close_all(CloseCode.GOING_AWAY, "server shutting down")
        for runner in reversed(self._runners):
            await runner.cleanup()
        if self.gate is not None:
            self.gate.close()
        if self.bus is not None:
            await self.bus.close()
        if self.db is not None:
            await self.db.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    async def _on_device_revoked(self, device_id: str, _payload: dict[str, Any]) -> None:
        if await self.connections.close(device_id, CloseCode.REVOKED, "device revoked"):
            log.warning("closed revoked device's connection", extra={"device_id": device_id})


def _check_agent_name(pki: PkiPaths, name: str) -> None:
    """Refuse to start a single port whose server certificate does not carry the agents' name: every
    agent would fail its hostname check."""
    from certs.errors import CertError

    names = tls.certificate_names(pki.server_pem)
    if name not in names and f"*.{name.split('.', 1)[-1]}" not in names:
        raise CertError(f"single_port: the server certificate ({pki.server_pem}) does not carry the agents' name "
                        f"{name}; issue it with --server-name {name} too (helpline certs intermediate), or set "
                        "agent_server_name to one of its names")


async def openapi_document(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document of the console API, built from the routes this server has."""
    return web.json_response(document_for(request.app))


async def run_forever(config: ServerConfig) -> None:
    server = HelplineServer(config)
    await server.start()
    net.freeze_startup_heap()  # full collections under a connection flood skip the started server's objects
    stop = stop_on_signals()
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await server.stop()
