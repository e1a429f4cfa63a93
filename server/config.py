"""Server configuration (``[server]`` table of the TOML file, ``HELPLINE_*`` overrides)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ServerConfig:
    data_dir: Path = Path("/var/lib/helpline")
    host: str = "0.0.0.0"  # noqa: S104 - a server listens on all interfaces by default
    agent_port: int = 8443
    console_port: int = 8444
    #: ``sqlite:///PATH`` (default: ``helpline.db`` in data_dir) or ``postgresql://…``.
    database_url: str = ""
    #: The node's PKI: ca.pem (the org TLS root's certificate), intermediate.pem/.key, server.pem/.key
    #: (default: data_dir/pki). Never the root's key: the server refuses to start if it is there.
    pki_dir: Path | None = None
    #: Run on a PKI directory from before intermediates, whose CA key (ca.key) is the root's. Off:
    #: with the root's key, whoever reads the directory can mint a chain the agents trust.
    allow_root_key_on_server: bool = False
    #: Public hostname the console and agents use; printed in enrollment lines.
    public_host: str = "localhost"
    log_format: str = "human"
    log_level: str = "info"
    keepalive_s: float = 20.0
    device_cert_days: int = 30
    #: Extra origins allowed to open console websockets (the console's own origin always is).
    allowed_origins: list[str] = field(default_factory=list)
    #: Record every session's tunnel stream to a file (for playback and review).
    session_recording: bool = False
    #: Where recordings go (default: data_dir/recordings).
    recordings_dir: Path | None = None
    #: A streaming session with no technician input and no real screen change this long ends (0 = never).
    session_idle_timeout_s: float = 900.0
    #: Largest diagnostics bundle an agent may upload (bytes).
    task_artifact_max_bytes: int = 50 * 1024 * 1024
    #: Stored diagnostics bundles are deleted this many days after upload (0 = keep forever).
    task_artifact_retention_days: int = 30
    #: Task runs targeting more devices than this need a second admin's approval.
    task_approval_threshold: int = 25

    @property
    def pki_path(self) -> Path:
        return self.pki_dir or self.data_dir / "pki"

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'helpline.db'}"

    @property
    def console_url(self) -> str:
        return f"https://{self.public_host}:{self.console_port}"
