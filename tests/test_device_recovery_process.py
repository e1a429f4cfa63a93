"""A real certificate runs out while the device is off; the real agent process comes back by proving its key.

Real ``helpline server`` and ``helpline agent run`` processes, real TLS. The node's intermediate is made to
live :data:`LIFE_S` seconds, so the device certificate it issues (capped at its issuer's end) really expires
— no clock is moved. Meanwhile the agent is stopped and the server too; the node is then rotated to a new
intermediate of the same root (as a delegated node's renewal or an administrator's rotation would have
done while the device was off) and both start again: the agent sees from its stored validity that its
certificate ended, recovers it on the console port, and connects with the new one.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from certs.pki import RootCA, init_pki, install_intermediate
from tests.procs import free_port, helpline, spawn, wait_for, wait_for_port

PASSPHRASE = b"correct horse battery staple"
#: The first intermediate's life, and so the device certificate's: long enough for a loaded machine to start
#: the server, enroll and connect once.
LIFE_S = 45
NAMES = ["localhost", "127.0.0.1"]


def _devices(config: Path, env: dict[str, str]) -> dict[str, dict[str, Any]]:
    rows = json.loads(helpline("admin", "device", "list", "--json", "--config", str(config), env=env).stdout)
    return {r["id"]: r for r in rows}


def _audit_actions(config: Path, env: dict[str, str]) -> str:
    return helpline("admin", "audit", "verify", "--config", str(config), env=env).stdout


def test_agent_off_past_its_certificate_recovers_and_connects(tmp_path: Path) -> None:
    """The agent connects, stops; its certificate ends; after the node's rotation the agent process recovers
    (logged; the doctor had said how long ago it expired) and is online with a certificate of the new
    intermediate, 30 days long; the audit chain stays intact."""
    data = tmp_path / "data"
    init_pki(data / "pki", NAMES, root_out=tmp_path / "root", passphrase=PASSPHRASE,
             lifetime=timedelta(seconds=LIFE_S))
    config = tmp_path / "helpline.toml"
    config.write_text(f'[server]\ndata_dir = "{data}"\nhost = "127.0.0.1"\nkeepalive_s = 5.0\n')
    env = {"HELPLINE_AGENT_PORT": str(free_port()), "HELPLINE_CONSOLE_PORT": str(free_port())}
    console_port = int(env["HELPLINE_CONSOLE_PORT"])
    state = tmp_path / "agent"
    agent_config = tmp_path / "agent.toml"
    agent_config.write_text(f'[agent]\nstate_dir = "{state}"\nbackoff_cap_s = 2.0\n')

    with spawn("server", "--config", str(config), log=tmp_path / "server.log", env=env) as server:
        wait_for_port(console_port, server, timeout=60)
        words = helpline("admin", "token", "create", "--group", "laptops", "--config", str(config), env=env).stdout.split()
        helpline("agent", "enroll", words[3], words[4], "--ca-sha256", words[6], "--state", str(state))
        device_id = json.loads((state / "agent.json").read_text())["device_id"]
        with spawn("agent", "run", "--config", str(agent_config), log=tmp_path / "agent-1.log"):
            wait_for(lambda: _devices(config, env)[device_id]["status"] == "online", timeout=LIFE_S,
                     what="the agent online with its short certificate")
    not_after = json.loads((state / "agent.json").read_text())["cert_not_after"]
    assert not_after < time.time() + LIFE_S  # capped at the short intermediate's end
    wait_for(lambda: time.time() > not_after + 1, timeout=LIFE_S + 30, what="the device certificate to expire")

    doctor = helpline("agent", "doctor", "--config", str(agent_config), "--timeout", "5", check=False).stdout
    assert "certificate expired 0 days ago; recovery runs at the agent's next connection" in doctor, doctor

    now = datetime.now(UTC)
    install_intermediate(data / "pki", RootCA.load(tmp_path / "root", PASSPHRASE).new_intermediate(NAMES, now=now),
                         NAMES, now=now)
    with spawn("server", "--config", str(config), log=tmp_path / "server-2.log", env=env) as server:
        wait_for_port(console_port, server, timeout=60)
        with spawn("agent", "run", "--config", str(agent_config), log=tmp_path / "agent-2.log") as agent:
            wait_for(lambda: _devices(config, env)[device_id]["status"] == "online", timeout=60,
                     what="the agent online again after recovering")
            assert agent.poll() is None
        row = _devices(config, env)[device_id]
        assert row["cert_expires"] > time.time() + 29 * 86400  # promoted at its first handshake
        assert "intact" in _audit_actions(config, env)
    log = (tmp_path / "agent-2.log").read_text()
    assert "certificate expired; recovering it" in log and "certificate recovered" in log, log
    info = json.loads((state / "agent.json").read_text())
    assert info["recovery"]["ok"] is True and info["cert_not_after"] > time.time() + 29 * 86400
    server_log = (tmp_path / "server-2.log").read_text()
    assert "device recovered its expired certificate" in server_log
