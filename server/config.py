"""Server configuration (``[server]`` table of the TOML file, ``HELPLINE_*`` overrides)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.addresses import url
from server.requests.config import RequestsConfig
from server.support_codes.settings import SupportCodeSettings


@dataclass
class MetricsConfig:
    """``[metrics]``: who may read ``/metrics`` (server/ops/metrics.py). Deny by default: without a
    token the console port answers 404, and the plain-HTTP listener is only started when asked for."""

    #: Bearer token a scraper sends to ``https://HOST:CONSOLE_PORT/metrics`` ("" = no scraping there).
    token: str = ""
    #: ``127.0.0.1:9464``: a plain-HTTP listener for /metrics, /healthz, /readyz on a loopback address
    #: only (no token there: whoever can reach localhost can read the figures). "" = none.
    listen: str = ""


@dataclass
class SiemConfig:
    """``[siem]``: where audit records are streamed as they are written (server/ops/siem/)."""

    #: ``HOST:PORT`` of an RFC 5425 syslog-over-TLS receiver ("" = none).
    syslog: str = ""
    #: CA bundle that verifies the syslog receiver's certificate (default: the system's).
    syslog_ca: Path | None = None
    #: Name the receiver's certificate must carry (default: HOST).
    syslog_server_name: str = ""
    #: Optional client certificate chain and key presented to the receiver.
    syslog_client_cert: Path | None = None
    syslog_client_key: Path | None = None
    #: JSON lines appended to this file ("" = none).
    json_file: Path | None = None
    #: JSON lines POSTed (application/x-ndjson) to this URL; https, or http to a loopback address.
    json_url: str = ""
    #: CA bundle for an https json_url (default: the system's).
    json_url_ca: Path | None = None
    #: Optional ``Authorization`` header value sent with each POST (e.g. "Bearer …"); never logged.
    json_url_authorization: str = ""
    #: Records read and sent per batch (what is held in memory per sink).
    batch: int = 500
    #: Seconds between looks at the log for records appended inside other transactions or processes.
    poll_s: float = 1.0


@dataclass
class RetentionConfig:
    """``[retention]``: how many days each kind of data is kept (0 = forever); server/lifecycle/retention.py
    deletes what is older once per ``interval_s``, on any node (each deletion is conditional, so two nodes
    never delete or audit the same thing twice). Task artifacts keep ``task_artifact_retention_days``,
    login history the personal-data setting (``helpline admin personal-data set --login-days``)."""

    #: Session recordings (.hlrec, .cast, .json; the store's objects too), counted from the session's end.
    recordings_days: int = 90
    #: Session chat transcripts, counted from each message.
    chat_days: int = 180
    #: Screenshots attached to support requests, counted from the request's creation.
    screenshots_days: int = 90
    #: Seconds between retention passes.
    interval_s: float = 3600.0


@dataclass
class ServerConfig:
    data_dir: Path = Path("/var/lib/helpline")
    host: str = "0.0.0.0"  # noqa: S104 - a server listens on all interfaces by default
    agent_port: int = 8443
    console_port: int = 8444
    #: Serve agents and the console on this one port (e.g. 443) instead of agent_port and console_port;
    #: 0 = two ports. Each connection goes where its TLS server name (SNI) says (server/net/sni.py):
    #: agent_server_name to the agents' mutual TLS, anything else to the console.
    single_port: int = 0
    #: The name agents send on the single port (default: agents.<public_host>). The server certificate must
    #: carry it (``helpline certs intermediate … --server-name agents.HOST``); no DNS record is needed.
    agent_server_name: str = ""
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
    #: Connection hygiene on both listeners (server/net/). A connection is *unauthenticated* from accept
    #: until its request headers are complete (TLS handshake included) and while it idles between requests.
    #: Caps on them, per source address (IPv6: per /64) and in all (0 = from the descriptor limit:
    #: (limit - 256) / 2, between 64 and 4096). Over a cap, a connection waiting longer than
    #: unauthenticated_evict_after_s makes room; otherwise the new one is reset at accept.
    max_unauthenticated_per_address: int = 64
    max_unauthenticated: int = 0
    unauthenticated_evict_after_s: float = 1.0
    #: TLS handshake, from accept; request headers, from accept (handshake included); the next request's
    #: headers, from the end of a response on a keep-alive connection.
    tls_handshake_timeout_s: float = 5.0
    header_timeout_s: float = 10.0
    idle_timeout_s: float = 60.0
    #: TLS handshakes computing at once per listener (server/net/slots.py); more wait in the listen queue.
    #: A slot is held until the handshake ends or for at most tls_handshake_hold_s.
    tls_handshakes_in_flight: int = 32
    tls_handshake_hold_s: float = 1.0
    device_cert_days: int = 30
    #: A device whose certificate expired at most this many days ago may recover it by proving its key on the
    #: console port (server/recovery.py) instead of enrolling again; 0 = never.
    device_recovery_days: int = 30
    #: Extra origins allowed to open console websockets (the console's own origin always is).
    allowed_origins: list[str] = field(default_factory=list)
    #: Record every session's tunnel stream to a file (for playback and review).
    session_recording: bool = False
    #: The NATS server(s) this node shares with the others (``tls://host:4222``, comma-separated; plaintext
    #: ``nats://`` only to a loopback address). Empty: one node alone, no bus (SQLite or PostgreSQL, nothing
    #: else to run). server/bus; off this machine a node refuses to start without TLS and authentication.
    nats_url: str = ""
    #: TLS to NATS: the bus CA's certificate verifying the NATS server (required off this machine), and the
    #: client certificate and key the node presents (``helpline certs nats``: its NATS user, named after its
    #: node_id). Credentials in the URL instead of a certificate also pass (never logged).
    nats_tls_ca: Path | None = None
    nats_tls_cert: Path | None = None
    nats_tls_key: Path | None = None
    #: This node's name on the bus (default: host name and console port). Unique per node.
    node_id: str = ""
    #: The console URL technicians use to reach this node directly (default: console_url); a session with
    #: a device held by this node is streamed here when it was requested on another node.
    node_url: str = ""
    #: Where recordings and task artifacts are shared between nodes (server/storage/objects.py): "local" (this
    #: node's directories, one node) or "nats" (JetStream object store ``helpline-artifacts`` on nats_url).
    object_store: str = "local"
    #: Copies JetStream keeps of each object (at most the NATS cluster's size) when the bucket is created.
    object_store_replicas: int = 1
    #: Where recordings go (default: data_dir/recordings).
    recordings_dir: Path | None = None
    #: Seal recordings, shell casts and task artifacts at rest (AES-256-GCM, server/storage/sealed.py) with
    #: the key in ``storage_key_file`` — a file, never the database. Off: new files are written in the clear.
    seal_at_rest: bool = True
    #: The storage key (32 bytes, created 0600 on first start). Default: data_dir/storage.key. Back it up:
    #: without it nothing sealed can be read.
    storage_key_file: Path | None = None
    #: A streaming session with no technician input and no real screen change this long ends (0 = never).
    session_idle_timeout_s: float = 900.0
    #: A remote shell with no byte either way this long is hung up by the relay (0 = never; the device's
    #: policy ``shell_idle_timeout_s`` applies too: the shorter wins).
    shell_idle_timeout_s: float = 900.0
    #: Largest file a session's toolkit may move either way (MiB); the device's own policy may set less.
    session_max_file_mb: int = 1024
    #: Largest diagnostics bundle an agent may upload (bytes).
    task_artifact_max_bytes: int = 50 * 1024 * 1024
    #: Stored diagnostics bundles are deleted this many days after upload (0 = keep forever).
    task_artifact_retention_days: int = 30
    #: Task runs targeting more devices than this need a second admin's approval.
    task_approval_threshold: int = 25
    #: Presence sweep (server/presence.py): live connections refresh online + last_seen, owed offline
    #: writes are retried, this often; a device's state is right this long after the database returns.
    presence_sweep_s: float = 30.0
    #: A device flagged online with no contact for this long and no connection on this node is set
    #: offline (a lost offline write, a node that died). At least twice presence_sweep_s.
    presence_stale_s: float = 90.0
    #: Seconds between CMDB maintenance passes (retention, the offline and reboot alerts).
    maintenance_interval_s: float = 60.0
    #: Token last_used / session last_seen are kept in memory and written in batches this often
    #: (server/accounts/usage.py): a request never writes to the database to authenticate.
    auth_usage_flush_s: float = 30.0
    #: ``[metrics]`` and ``[siem]`` tables of the same file (:func:`load_sections`).
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    siem: SiemConfig = field(default_factory=SiemConfig)
    #: ``[retention]``: days recordings, chat and screenshots are kept (server/lifecycle/retention.py).
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    #: ``[requests]``: Slack/Teams announcements of support requests (server/requests/config.py).
    requests: RequestsConfig = field(default_factory=RequestsConfig)
    #: ``[support_codes]``: code length, lives, caps, redeem limits (server/support_codes/settings.py); the
    #: server refuses to start when they allow guessing a live code with probability 1e-6 or more.
    support_codes: SupportCodeSettings = field(default_factory=SupportCodeSettings)

    @property
    def pki_path(self) -> Path:
        return self.pki_dir or self.data_dir / "pki"

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'helpline.db'}"

    @property
    def console_url(self) -> str:
        return url("https", self.public_host, self.single_port or self.console_port)

    @property
    def agent_name(self) -> str:
        """The server name agents send on the single port (``agent_server_name``, or agents.<public_host>)."""
        import contextlib
        import ipaddress

        from common.config import ConfigError

        name = (self.agent_server_name or f"agents.{self.public_host}").strip().lower().rstrip(".")
        with contextlib.suppress(ValueError):  # not an IP address: the name is checked below
            ipaddress.ip_address(name.removeprefix("agents."))
            raise ConfigError("agent_server_name: public_host is an IP address; name the agents' route "
                              "(a DNS name the server certificate carries, e.g. agents.helpline.example.org)")
        if not name or len(name) > 253 or not all(part and part.replace("-", "").isalnum() and part.isascii()
                                                  for part in name.split(".")):
            raise ConfigError(f"agent_server_name: {name!r} is not a DNS host name")
        return name


def load_sections(config: ServerConfig, path: Path | None) -> ServerConfig:
    """Fill ``config.metrics`` and ``config.siem`` from the file's ``[metrics]`` and ``[siem]`` tables
    (``HELPLINE_METRICS_TOKEN``, ``HELPLINE_SIEM_SYSLOG`` … override them)."""
    from common.config import load_config

    sections: dict[str, Any] = {"metrics": MetricsConfig, "siem": SiemConfig, "requests": RequestsConfig,
                               "support_codes": SupportCodeSettings, "retention": RetentionConfig}
    for name, cls in sections.items():
        setattr(config, name, load_config(cls, path, section=name, env_prefix=f"HELPLINE_{name.upper()}_"))
    return config
