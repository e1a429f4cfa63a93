"""The helpline CLI with real processes: certs, server, token, enroll, agent, device list/revoke, config."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.procs import free_port, helpline, spawn, wait_for, wait_for_port


def test_help_explains_every_command() -> None:
    """--help lists the subcommands and each subcommand has its own help."""
    out = helpline("--help").stdout
    for name in ("certs", "server", "agent", "admin", "demo"):
        assert name in out
    assert "--ca-sha256" in helpline("agent", "enroll", "--help").stdout
    assert "--group" in helpline("admin", "token", "create", "--help").stdout


def test_certs_init_refuses_overwrite(tmp_path: Path) -> None:
    """certs init writes 0600 keys (the root's beside the PKI directory, not in it), prints the fingerprint, and
    refuses to overwrite without --force."""
    passphrase = tmp_path / "passphrase"
    passphrase.write_text("a passphrase long enough\n")
    init = ("certs", "init", "--dir", str(tmp_path / "pki"), "--server-name", "h.example",
            "--passphrase-file", str(passphrase))
    first = helpline(*init)
    assert "fingerprint" in first.stdout and "offline" in first.stdout
    assert (tmp_path / "pki-root" / "ca.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "pki" / "intermediate.key").stat().st_mode & 0o777 == 0o600
    assert not (tmp_path / "pki" / "ca.key").exists()
    again = helpline(*init, check=False)
    assert again.returncode == 1 and "--force" in again.stderr
    helpline(*init, "--force")


def test_full_cli_flow_enroll_list_revoke(tmp_path: Path) -> None:
    """server + token + enroll + agent run; device list shows it online; revoke makes the agent exit 3."""
    data = tmp_path / "data"
    helpline("certs", "init", "--dir", str(data / "pki"), "--server-name", "localhost", "--discard-root")
    agent_port, console_port = free_port(), free_port()
    # Ports via environment overrides (HELPLINE_*), the rest via a TOML file.
    config = tmp_path / "helpline.toml"
    config.write_text(f'[server]\ndata_dir = "{data}"\nhost = "127.0.0.1"\nkeepalive_s = 5.0\n')
    env = {"HELPLINE_AGENT_PORT": str(agent_port), "HELPLINE_CONSOLE_PORT": str(console_port)}
    with spawn("server", "--config", str(config), "--log-format", "json", log=tmp_path / "server.log",
               env=env) as server:
        wait_for_port(console_port, server)
        line = helpline("admin", "token", "create", "--group", "laptops", "--config", str(config), env=env).stdout
        words = line.split()
        assert words[:3] == ["helpline", "agent", "enroll"] and words[5] == "--ca-sha256"
        url, token, fingerprint = words[3], words[4], words[6]
        assert url == f"https://localhost:{console_port}" and token.startswith("hlt_") and len(fingerprint) == 64
        state = tmp_path / "agent"
        helpline("agent", "enroll", url, token, "--ca-sha256", fingerprint, "--state", str(state))
        device_id = json.loads((state / "agent.json").read_text())["device_id"]
        with spawn("agent", "run", "--state", str(state), log=tmp_path / "agent.log") as agent:

            def listed() -> dict:
                rows = json.loads(helpline("admin", "device", "list", "--json", "--config", str(config)).stdout)
                return {r["id"]: r for r in rows}

            wait_for(lambda: listed().get(device_id, {}).get("status") == "online", timeout=20, what="online")
            row = listed()[device_id]
            assert row["group"] == "laptops" and row["cert_expires"] > time.time() + 29 * 86400
            helpline("admin", "device", "revoke", device_id, "--config", str(config))
            assert agent.wait(timeout=10) == 3
            assert listed()[device_id]["status"] == "revoked"
        assert "revoked" in (tmp_path / "agent.log").read_text()
        verify = helpline("admin", "audit", "verify", "--config", str(config))
        assert "intact" in verify.stdout
    # JSON logs: one object per line, and no token secret in them.
    secret = token.split(".", 1)[1]
    lines = [json.loads(x) for x in (tmp_path / "server.log").read_text().splitlines() if x.startswith("{")]
    assert any(entry.get("msg") == "device enrolled" for entry in lines)
    assert secret not in (tmp_path / "server.log").read_text()


def test_bad_config_is_a_clear_error(tmp_path: Path) -> None:
    """Unknown keys and bad values in the TOML file are reported with the key name."""
    config = tmp_path / "bad.toml"
    config.write_text('[server]\nagent_prot = 1\n')
    result = helpline("server", "--config", str(config), check=False)
    assert result.returncode == 2 and "agent_prot" in result.stderr
    config.write_text('[server]\nagent_port = "many"\n')
    result = helpline("server", "--config", str(config), check=False)
    assert result.returncode == 2 and "agent_port" in result.stderr


@pytest.mark.parametrize("env_value", ["9999"])
def test_env_overrides_toml(tmp_path: Path, env_value: str) -> None:
    """HELPLINE_* variables override the TOML file."""
    from common.config import load_config
    from server.config import ServerConfig

    config = tmp_path / "c.toml"
    config.write_text('[server]\nagent_port = 1234\nallowed_origins = ["https://a"]\n')
    os.environ["HELPLINE_AGENT_PORT"] = env_value
    try:
        loaded = load_config(ServerConfig, config, section="server")
    finally:
        del os.environ["HELPLINE_AGENT_PORT"]
    assert loaded.agent_port == 9999 and loaded.allowed_origins == ["https://a"]
