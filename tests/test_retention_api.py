"""POST /api/v1/devices/{id}/purge: administer on every group only; 409 for a device still active and for a
second purge; the revoked device's data goes, the audit log stays whole."""

from __future__ import annotations

from pathlib import Path

from server import audit, devices
from tests.conftest import add_device
from tests.harness import running_server
from tests.test_session_helpers import api, install_test_auth


async def test_purge_route(tmp_path: Path) -> None:
    """Technician 403; admin on an active device 409 device_not_revoked; revoked → 200 with counts; again 409."""
    async with running_server(tmp_path / "srv") as server:
        install_test_auth(server)
        await add_device(server.db, "dev-9", "lab")
        await server.db.execute("INSERT INTO inventory_sections (device_id, section, data, checksum, updated_at)"
                                " VALUES ('dev-9', 'os', '{}', 'c', 0)")
        path = "/api/v1/devices/dev-9/purge"
        status, body = await api(server, "POST", path, "ann")
        assert status == 403, body
        status, body = await api(server, "POST", path, "root")
        assert status == 409 and body["error"]["code"] == "device_not_revoked"
        assert await server.db.fetchone("SELECT 1 AS x FROM inventory_sections WHERE device_id = 'dev-9'")
        status, body = await api(server, "POST", "/api/v1/devices/nope/purge", "root")
        assert status == 404
        assert await devices.revoke(server.db, "dev-9", actor="root")
        status, body = await api(server, "POST", path, "root")
        assert status == 200 and body["counts"] == {"inventory_sections": 1}
        assert await server.db.fetchone("SELECT 1 AS x FROM inventory_sections WHERE device_id = 'dev-9'") is None
        status, body = await api(server, "POST", path, "root")
        assert status == 409 and body["error"]["code"] == "already_purged"
        purged = await audit.recent(server.db, action="device.purged")
        assert [(r["actor"], r["target"]) for r in purged] == [("root", "dev-9")]
        assert (await audit.verify_chain(server.db)).ok
