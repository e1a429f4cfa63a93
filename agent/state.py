"""The agent's state directory: its key, certificate, the pinned org CA and identity."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.files import atomic_write


@dataclass(frozen=True)
class AgentState:
    directory: Path

    @property
    def key_path(self) -> Path:
        return self.directory / "device.key"

    @property
    def cert_path(self) -> Path:
        return self.directory / "device.pem"

    @property
    def ca_path(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def legacy_grant_pub_path(self) -> Path:
        """The old server-held grant key's public half, pinned by agents enrolled before the org root
        existed; used once, to take the root from a hand-over signed by it (agent.authority.legacy)."""
        return self.directory / "grant.pub"

    @property
    def info_path(self) -> Path:
        return self.directory / "agent.json"

    @property
    def outbox_path(self) -> Path:
        return self.directory / "outbox.db"

    def is_enrolled(self) -> bool:
        return all(p.exists() for p in (self.key_path, self.cert_path, self.ca_path, self.info_path))

    def ensure_dir(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.directory, 0o700)

    def load_info(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.info_path.read_text())
        return data

    def save_info(self, info: dict[str, Any]) -> None:
        atomic_write(self.info_path, json.dumps(info, indent=2, sort_keys=True))

    def certificate_validity(self) -> tuple[float, float] | None:
        """(not_before, not_after) of the current certificate, as recorded when it was stored."""
        info = self.load_info()
        if "cert_not_before" in info and "cert_not_after" in info:
            return float(info["cert_not_before"]), float(info["cert_not_after"])
        return None

    def record_certificate_validity(self, not_before: float, not_after: float) -> None:
        """Remember the validity so the running agent can plan renewal without parsing X.509."""
        self.save_info({**self.load_info(), "cert_not_before": not_before, "cert_not_after": not_after})

    @property
    def device_id(self) -> str:
        return str(self.load_info()["device_id"])

    @property
    def agent_url(self) -> str:
        return str(self.load_info()["agent_url"])

    @property
    def agent_server_name(self) -> str | None:
        """The TLS server name to send to ``agent_url`` instead of its host (a server serving agents and the
        console on one port routes by it); None: the URL's host, as with two ports."""
        return str(self.load_info().get("agent_server_name") or "") or None
