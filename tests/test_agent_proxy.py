"""Agents behind an HTTP CONNECT proxy: real `helpline agent` processes, a real server, a proxy that
demands Basic credentials (tests/connect_proxy.py). TLS runs end to end inside the tunnels."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from certs.pki import CertificateAuthority
from common.proxy import DIRECT, ProxyConfigError, for_target, parse, redact
from server import devices
from tests.connect_proxy import ConnectProxy
from tests.harness import console_url, new_token, running_server, wait_until
from tests.procs import helpline, spawn

PASSWORD = "s3cret@proxy"  # an '@' so it must be percent-encoded in the URL


def _proxy_url(proxy: ConnectProxy, password: str = PASSWORD) -> str:
    return f"http://agent:{password.replace('@', '%40')}@127.0.0.1:{proxy.port}"


@pytest.fixture(autouse=True)
def _no_machine_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever proxy this machine's environment names is not the test's."""
    for name in ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY", "HELPLINE_PROXY"):
        monkeypatch.delenv(name, raising=False)


def _clean_env(**extra: str) -> dict[str, str]:
    return dict(extra)


async def _online(server, device_id: str) -> bool:  # type: ignore[no-untyped-def]
    row = await devices.get(server.db, device_id)
    return bool(row and row["online"])


async def test_enroll_and_run_through_an_authenticating_proxy(tmp_path: Path) -> None:
    """Enrollment (CA fetch + request) goes through HELPLINE_PROXY, the running agent through the environment's
    https_proxy; every tunnel carries TLS (a handshake record first), and the password is in no log."""
    proxy = ConnectProxy("agent", PASSWORD)
    await proxy.start()
    try:
        async with running_server(tmp_path / "srv") as server:
            token = await new_token(server)
            fingerprint = CertificateAuthority.load(server.config.pki_path).fingerprint_sha256
            state = tmp_path / "agent"
            env = _clean_env(HELPLINE_PROXY=_proxy_url(proxy), HELPLINE_BACKOFF_CAP_S="1")
            result = await asyncio.to_thread(
                helpline,
                "agent",
                "enroll",
                console_url(server),
                token,
                "--ca-sha256",
                fingerprint,
                "--state",
                str(state),
                env=env,
            )
            assert "enrolled as device" in result.stdout
            enroll_ports = {(t.host, t.port) for t in proxy.tunnels}
            assert enroll_ports == {("localhost", server.console_port)}, proxy.tunnels
            assert len(proxy.tunnels) == 2  # the pinned CA fetch, then the enrollment request
            device_id = result.stdout.split("enrolled as device ", 1)[1].split()[0]

            log = tmp_path / "agent.log"
            run_env = _clean_env(https_proxy=_proxy_url(proxy), HELPLINE_BACKOFF_CAP_S="1")
            with spawn("agent", "run", "--state", str(state), "--log-format", "json", log=log, env=run_env):
                await wait_until(lambda: _online(server, device_id), timeout=30, what="device online via the proxy")
            agent_tunnels = [t for t in proxy.tunnels if t.port == server.agent_port]
            assert agent_tunnels, proxy.tunnels
            for tunnel in proxy.tunnels:
                assert tunnel.first_bytes[:2] == b"\x16\x03", tunnel  # a TLS handshake record, not plaintext
            text = log.read_text()
            assert '"proxy": "http://agent:***@127.0.0.1:' in text
            assert PASSWORD not in text and "s3cret%40proxy" not in text
            assert proxy.refused == 0
    finally:
        await proxy.stop()


async def test_wrong_password_is_refused_and_not_logged(tmp_path: Path) -> None:
    """A 407 fails enrollment with a clear message and keeps a running agent offline; the password is never shown."""
    proxy = ConnectProxy("agent", PASSWORD)
    await proxy.start()
    try:
        async with running_server(tmp_path / "srv") as server:
            token = await new_token(server)
            fingerprint = CertificateAuthority.load(server.config.pki_path).fingerprint_sha256
            env = _clean_env(HELPLINE_PROXY=_proxy_url(proxy, "wrong@pass"))
            result = await asyncio.to_thread(
                helpline,
                "agent",
                "enroll",
                console_url(server),
                token,
                "--ca-sha256",
                fingerprint,
                "--state",
                str(tmp_path / "agent"),
                env=env,
                check=False,
            )
            assert result.returncode != 0
            assert "407" in result.stderr, result.stderr
            assert "wrong" not in result.stderr and "wrong%40pass" not in result.stderr
            assert proxy.refused >= 1 and proxy.tunnels == []
    finally:
        await proxy.stop()


async def test_direct_ignores_the_environment(tmp_path: Path) -> None:
    """``proxy = "direct"`` connects straight to the server although the environment names a proxy that is down."""
    async with running_server(tmp_path / "srv") as server:
        token = await new_token(server)
        fingerprint = CertificateAuthority.load(server.config.pki_path).fingerprint_sha256
        env = _clean_env(https_proxy="http://127.0.0.1:9", HELPLINE_PROXY=DIRECT)
        result = await asyncio.to_thread(
            helpline,
            "agent",
            "enroll",
            console_url(server),
            token,
            "--ca-sha256",
            fingerprint,
            "--state",
            str(tmp_path / "agent"),
            env=env,
        )
        assert "enrolled as device" in result.stdout
        second = await new_token(server)
        down = await asyncio.to_thread(
            helpline,
            "agent",
            "enroll",
            console_url(server),
            second,
            "--ca-sha256",
            fingerprint,
            "--state",
            str(tmp_path / "agent2"),
            env=_clean_env(https_proxy="http://127.0.0.1:9"),
            check=False,
        )
        # The environment's proxy is used by default, and the message says so.
        assert down.returncode != 0 and "through the proxy http://127.0.0.1:9" in down.stderr, down.stderr


def test_settings_are_checked_and_secrets_redacted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ProxyConfigError, match="only http://") as caught:
        parse("socks5://u:topsecret@proxy:1080")
    assert "topsecret" not in str(caught.value)
    with pytest.raises(ProxyConfigError, match="no host"):
        parse("http://:3128")
    proxy = parse("http://me:p%40ss@[2001:db8::1]:3128")
    assert (proxy.host, proxy.port, proxy.username, proxy.password) == ("2001:db8::1", 3128, "me", "p@ss")
    assert str(proxy) == "http://me:***@[2001:db8::1]:3128"
    assert proxy.authorization() == {"Proxy-Authorization": "Basic bWU6cEBzcw=="}
    assert redact("http://me:p%40ss@h:1") == "http://me:***@h:1"
    monkeypatch.setenv("https_proxy", "proxy.example:3128")
    monkeypatch.setenv("no_proxy", "internal.example")
    found = for_target("", "helpline.example")
    assert found is not None and (found.host, found.port) == ("proxy.example", 3128)
    assert for_target("", "internal.example") is None
    assert for_target(DIRECT, "helpline.example") is None
    monkeypatch.delenv("https_proxy")
    monkeypatch.delenv("no_proxy")
    refused = helpline(
        "agent",
        "run",
        "--state",
        str(tmp_path / "a"),
        check=False,
        env=_clean_env(HELPLINE_PROXY="https://u:topsecret@proxy:443"),
    )
    assert refused.returncode != 0 and "only http:// proxies" in refused.stderr
    assert "topsecret" not in refused.stderr
