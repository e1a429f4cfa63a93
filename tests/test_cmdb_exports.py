"""Exports: GLPI inventory validated against the official JSON Schema; ServiceNow IRE push
against a local fake IRE endpoint, with per-item errors reported from inside an HTTP 200."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from aiohttp import web

from agent.inventory import collect_inventory
from helpline.cli import main
from server import audit, devices
from server.cmdb import inventory_store
from server.cmdb.sections import checksum
from server.store import open_database


@pytest.fixture
def glpi_schema() -> dict[str, Any]:
    path = os.environ.get("HELPLINE_GLPI_SCHEMA")
    if not path or not Path(path).exists():
        if os.environ.get("CI"):
            pytest.fail("HELPLINE_GLPI_SCHEMA must point at inventory.schema.json under CI")
        pytest.skip("HELPLINE_GLPI_SCHEMA not set")
    return json.loads(Path(path).read_text())


async def _populate(data_dir: Path, device_ids: list[str]) -> None:
    inventory = await asyncio.to_thread(collect_inventory)
    db = await open_database(f"sqlite:///{data_dir / 'helpline.db'}")
    try:
        for device_id in device_ids:
            async with db.transaction() as tx:
                await devices.ensure_group(tx, "lab")
                await devices.register(tx, device_id, "lab", "s-" + device_id, time.time() + 86400)
                await inventory_store.apply_report(tx, device_id, full=True, sections=inventory,
                                                   checksums={k: checksum(v) for k, v in inventory.items()},
                                                   now=time.time())
    finally:
        await db.close()


async def test_glpi_export_validates_against_official_schema(tmp_path: Path, glpi_schema: dict[str, Any]) -> None:
    """`helpline admin export --format glpi` writes documents (this machine's real inventory) the schema accepts."""
    data = tmp_path / "srv"
    await _populate(data, ["dev-1", "dev-2"])
    out = tmp_path / "glpi.json"
    assert await asyncio.to_thread(main, ["admin", "export", "--format", "glpi", "--data", str(data),
                                          "--out", str(out)]) == 0
    docs = json.loads(out.read_text())
    assert [d["deviceid"] for d in docs] == ["dev-1", "dev-2"]
    validator = jsonschema.Draft7Validator(glpi_schema)
    for doc in docs:
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
        assert not errors, [f"{list(e.path)}: {e.message}" for e in errors[:5]]
    single = tmp_path / "one.json"
    assert await asyncio.to_thread(main, ["admin", "export", "--format", "glpi", "--data", str(data),
                                          "--device", "dev-2", "--out", str(single)]) == 0
    assert json.loads(single.read_text())["deviceid"] == "dev-2"


@pytest.fixture
async def fake_ire() -> AsyncIterator[dict[str, Any]]:
    """Stands in for ServiceNow's identifyreconcile: checks auth, answers 200 with one item error for dev-2."""
    state: dict[str, Any] = {"posts": []}

    async def identify(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") is None:
            return web.json_response({"error": "auth"}, status=401)
        body = await request.json()
        state["posts"].append(body)
        name = body["items"][0]["values"].get("name", "")
        errors = [{"error": "MISSING_MATCHING_ATTRIBUTES", "message": "no serial_number"}] if name == "dev-2" else []
        items = [{"className": it["className"], "operation": "INSERT", "sysId": f"sys{i}", "errors": errors if i == 0
                  else []} for i, it in enumerate(body["items"])]
        return web.json_response({"result": {"items": items, "relations": []}})

    app = web.Application()
    app.router.add_post("/api/now/identifyreconcile", identify)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state["url"] = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    yield state
    await runner.cleanup()


async def test_servicenow_push_reports_item_errors_inside_http_200(tmp_path: Path, fake_ire: dict[str, Any],
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Every device is posted as an IRE payload; an item error returned with HTTP 200 makes the push fail loudly."""
    data = tmp_path / "srv"
    await _populate(data, ["dev-1"])
    monkeypatch.setenv("SN_PASS", "secret")
    args = ["admin", "cmdb", "push", "servicenow", "--instance", fake_ire["url"], "--user", "helpline",
            "--password-env", "SN_PASS", "--data", str(data)]
    assert await asyncio.to_thread(main, args) == 0
    assert len(fake_ire["posts"]) == 1
    assert fake_ire["posts"][0]["items"][0]["className"] == "cmdb_ci_computer"

    # A second device whose payload IRE rejects item-wise (the fake flags the computer named dev-2).
    db = await open_database(f"sqlite:///{data / 'helpline.db'}")
    try:
        inv = await inventory_store.get_inventory(db, "dev-1")
        inv["identity"] = {**inv.get("identity", {}), "serial": None, "hostname": "dev-2"}
        async with db.transaction() as tx:
            await devices.register(tx, "dev-2", "lab", "s2", time.time() + 86400)
            await inventory_store.apply_report(tx, "dev-2", full=True, sections=inv,
                                               checksums={k: checksum(v) for k, v in inv.items()}, now=time.time())
    finally:
        await db.close()
    capsys.readouterr()
    code = await asyncio.to_thread(main, args)
    out = capsys.readouterr()
    assert code == 1 and "dev-2: item 0 (cmdb_ci_computer): MISSING_MATCHING_ATTRIBUTES" in out.err
    assert "pushed 2 device(s)" in out.out
    db = await open_database(f"sqlite:///{data / 'helpline.db'}")
    try:
        actions = [r["action"] for r in await audit.recent(db, action="cmdb.push.*")]
    finally:
        await db.close()
    assert actions == ["cmdb.push.servicenow", "cmdb.push.servicenow"]


def test_push_refuses_plain_http_to_remote_hosts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Credentials never go over plain http except to loopback (the test double)."""
    assert main(["admin", "cmdb", "push", "servicenow", "--instance", "http://acme.service-now.com",
                 "--data", str(tmp_path)]) == 2
    assert "https" in capsys.readouterr().err
