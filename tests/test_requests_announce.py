"""Announcement payloads and their configuration: Slack text escaped (no forged mentions or links), the Teams
Adaptive Card shape, and only https (or http to loopback) webhook URLs, refused without echoing the secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.config import ConfigError
from server.config import ServerConfig, load_sections
from server.requests.announce import slack_payload, teams_payload
from server.requests.config import RequestsConfig

ROW = {"id": "req-1", "number": 12, "summary": "<!channel> printer & <https://evil|click>", "urgency": "high",
       "group_name": "lab", "device_id": "dev-1", "requester": "ann", "created_at": 1000.0}


def test_slack_text_is_escaped_and_carries_the_number() -> None:
    """The device's summary cannot mention @channel or make a link: <, > and & are escaped everywhere."""
    payload = slack_payload(ROW, "new", hostname="pc-1", queue_url="https://helpline.example/#/queue", now=1000.0)
    assert payload["text"] == "New support request #12: &lt;!channel&gt; printer &amp; &lt;https://evil|click&gt;"
    section = payload["blocks"][0]["text"]["text"]
    assert "<!channel>" not in section and "<https://evil" not in section
    assert payload["blocks"][2]["elements"][0]["url"] == "https://helpline.example/#/queue"
    waiting = slack_payload(ROW, "waiting", hostname="pc-1", queue_url="u", now=1000.0 + 3900)
    assert waiting["text"].startswith("Support request #12 has been waiting 1 h 5 min")


def test_teams_message_is_an_adaptive_card() -> None:
    payload = teams_payload(ROW, "new", hostname="", queue_url="https://q", now=1000.0)
    assert payload["type"] == "message" and len(payload["attachments"]) == 1
    attachment = payload["attachments"][0]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    assert card["body"][1]["text"] == ROW["summary"]
    assert {"title": "Device", "value": "dev-1"} in card["body"][2]["facts"]
    assert card["actions"][0] == {"type": "Action.OpenUrl", "title": "Open the queue", "url": "https://q"}


@pytest.mark.parametrize("url", ["http://hooks.slack.com/services/T/B/secret123", "ftp://x/secret123",
                                 "https://user:secret123@hooks.example/x", "http://10.0.0.1/secret123",
                                 "not a url secret123"])
def test_unsafe_webhook_urls_are_refused_without_echoing_them(url: str) -> None:
    with pytest.raises(ConfigError) as refused:
        RequestsConfig(slack_webhook_url=url)
    assert "secret123" not in str(refused.value) and "slack_webhook_url" in str(refused.value)


def test_acceptable_webhook_urls() -> None:
    config = RequestsConfig(slack_webhook_url="https://hooks.slack.com/services/T/B/x",
                            teams_webhook_url="http://127.0.0.1:8080/hook")
    assert sorted(config.targets) == ["slack", "teams"]
    assert RequestsConfig().targets == {}


def test_the_requests_table_of_the_server_toml(tmp_path: Path) -> None:
    """[requests] of the server's TOML file fills ServerConfig.requests; an unsafe URL stops the load."""
    toml = tmp_path / "server.toml"
    toml.write_text('[server]\n[requests]\nslack_webhook_url = "https://hooks.slack.com/services/T/B/x"\n'
                    "waiting_threshold_s = 300\n")
    config = load_sections(ServerConfig(), toml)
    assert config.requests.slack_webhook_url.endswith("/T/B/x") and config.requests.waiting_threshold_s == 300
    toml.write_text('[requests]\nteams_webhook_url = "http://example.org/secret123"\n')
    with pytest.raises(ConfigError) as refused:
        load_sections(ServerConfig(), toml)
    assert "secret123" not in str(refused.value)
