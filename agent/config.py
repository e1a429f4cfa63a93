"""Agent configuration (``[agent]`` table of the TOML file, ``HELPLINE_*`` overrides)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class AgentConfig:
    state_dir: Path = Path("/var/lib/helpline-agent")
    log_format: str = "human"
    log_level: str = "info"
    #: Seconds between health samples.
    health_interval_s: float = 60.0
    #: A full inventory is sent at least this often, deltas in between.
    full_inventory_interval_s: float = 86400.0
    #: Seconds between inventory change checks.
    inventory_interval_s: float = 3600.0
    #: Outbox bound, in days of samples at the health interval.
    outbox_max_days: float = 7.0
    #: Reconnect backoff cap in seconds.
    backoff_cap_s: float = 60.0
    #: A connection that stayed up this long resets the reconnect backoff (the next retry waits 0–1 s).
    backoff_reset_s: float = 60.0
    #: Local policy file owned by the device's admin (consent rules the server cannot override).
    policy_file: Path | None = None
    #: X display the consent UI and screen sessions use (e.g. ":0"); None = the $DISPLAY the agent inherited.
    display: str | None = None
    #: A user to count as logged in at ``display`` although the OS records no login there — for a display
    #: nobody logs in to, such as the Xvfb that ``helpline demo`` starts (it writes ``session_user = "demo"``).
    #: Attended sessions then prompt on that display. None (the default): only real logins (utmp) count.
    session_user: str | None = None
    #: SHA-256 fingerprint of the org trust root this device honours unattended documents from (``helpline trust
    #: init`` prints it), deployed with the agent's configuration. Unset: the one given at enrollment
    #: (``--root-sha256``); neither: no unattended document is honoured. A server offering another root is refused.
    trust_root_sha256: str | None = None
    #: How long an unattended session waits for the technician's signature over the device's fresh nonce.
    unattended_proof_timeout_s: float = 60.0
    #: Who shows prompts and captures the screen. "direct": this process, on ``display`` (a desktop agent, the
    #: tests, the demo). "helper": this process is the root system service and asks the session helper of
    #: logind's active session (``helpline agent session-helper``, run as that user) over ``desktop_socket``.
    desktop: str = "direct"
    #: The service's Unix socket for session helpers (desktop = "helper"; also read by the helper).
    desktop_socket: Path = Path("/run/helpline-agent/desktop.sock")
    #: Proxy for every connection to the server (common/proxy.py): "" = the environment's https_proxy/no_proxy,
    #: "direct" = never, "http://[user:password@]host:port" = that CONNECT proxy (TLS runs inside the tunnel).
    proxy: str = ""
    #: Where logind answers: "SYSTEM" (the system bus) or a D-Bus address (unix:path=…).
    logind_bus: str = "SYSTEM"
