"""``[requests]`` of the server's TOML file: where new and long-waiting requests are announced.

The webhook URLs are secrets (whoever holds one posts into the team's channel): they are never
logged, never shown by the API, and only ``https`` (or ``http`` to a loopback address, for a local
relay or a test receiver) is accepted.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from common.config import ConfigError


@dataclass
class RequestsConfig:
    #: Slack incoming webhook (``https://hooks.slack.com/services/…``); "" = none.
    slack_webhook_url: str = ""
    #: Microsoft Teams incoming webhook / Workflows URL; "" = none.
    teams_webhook_url: str = ""
    #: A request still waiting (unclaimed) this long is announced once more (0 = never).
    waiting_threshold_s: float = 900.0
    #: How often the waiting requests are looked at.
    waiting_check_s: float = 5.0
    #: The console address put in announcements ("" = the server's own console URL).
    console_url: str = ""

    def __post_init__(self) -> None:
        for name in ("slack_webhook_url", "teams_webhook_url"):
            url = getattr(self, name)
            if url and not acceptable_url(url):
                # The URL itself is a secret: the message names the key, never the value.
                raise ConfigError(f"[requests] {name}: must be https://, or http:// to a loopback address")
        if self.waiting_threshold_s < 0 or self.waiting_check_s <= 0:
            raise ConfigError("[requests] waiting_threshold_s must be >= 0 and waiting_check_s > 0")

    @property
    def targets(self) -> dict[str, str]:
        """Configured webhooks by kind ("slack", "teams")."""
        found = {"slack": self.slack_webhook_url, "teams": self.teams_webhook_url}
        return {kind: url for kind, url in found.items() if url}


def acceptable_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    if not parts.hostname or parts.username or parts.password:
        return False
    if parts.scheme == "https":
        return True
    if parts.scheme != "http":
        return False
    if parts.hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        return False
