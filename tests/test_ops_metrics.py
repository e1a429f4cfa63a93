"""/metrics (token on the console port, the loopback listener), /healthz and /readyz on a real server."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.config import AgentConfig
from server.config import MetricsConfig, ServerConfig, load_sections
from server.ops import parse_listen
from server.ops.metrics import register_collector, unregister_collector
from tests.harness import enroll_agent, running_agent, running_server, wait_until
from tests.pg_cluster import private_cluster
from tests.procs import free_port
from tests.test_accounts_support import client


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


async def test_metrics_need_the_token_and_count_a_real_agent(tmp_path: Path) -> None:
    """Without the token 401, wrong token 401; with it the agent, its connect and its health samples show."""
    local = free_port()
    metrics = MetricsConfig(token="scrape-secret", listen=f"127.0.0.1:{local}")
    async with running_server(tmp_path / "srv", metrics=metrics) as server:
        state = await enroll_agent(server, tmp_path / "agent")
        config = AgentConfig(state_dir=state.directory, backoff_cap_s=1.0, health_interval_s=0.2)
        async with running_agent(state, config), client(server) as http:
            async with http.get("/metrics") as resp:
                assert resp.status == 401
            async with http.get("/metrics", headers={"Authorization": "Bearer wrong"}) as resp:
                assert resp.status == 401
            auth = {"Authorization": "Bearer scrape-secret"}

            async def scraped() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
                async with http.get("/metrics", headers=auth) as resp:
                    assert resp.status == 200
                    assert resp.headers["Content-Type"].startswith("text/plain")
                    return samples(await resp.text())

            async def agent_counted() -> bool:
                found = await scraped()
                return (found.get(("helpline_agents_online", ())) == 1
                        and found.get(("helpline_agent_connects_total", ()), 0) >= 1
                        and found.get(("helpline_health_samples_total", ()), 0) >= 1
                        and found.get(("helpline_ingest_messages_total", (("kind", "health"),)), 0) >= 1)

            await wait_until(agent_counted, timeout=60, interval=0.3, what="the agent in the metrics")
            found = await scraped()
            assert found[("helpline_scrape_database_ok", ())] == 1
            assert found[("helpline_db_pool_size", ())] >= 1
            assert ("helpline_event_bus_lag_seconds", ()) in found
            assert found[("process_resident_memory_bytes", ())] > 10_000_000
            assert ("process_cpu_seconds_total", ()) in found
            # The loopback listener: no token there.
            async with aiohttp.ClientSession() as plain, plain.get(f"http://127.0.0.1:{local}/metrics") as resp:
                assert resp.status == 200
                assert samples(await resp.text())[("helpline_agents_online", ())] == 1


async def test_other_areas_add_collectors(tmp_path: Path) -> None:
    """register_collector: a custom collector's family is in the next scrape, and gone once unregistered."""
    from prometheus_client.core import GaugeMetricFamily

    class Answer:
        def collect(self):  # type: ignore[no-untyped-def]
            family = GaugeMetricFamily("helpline_test_answer", "a test figure")
            family.add_metric([], 42)
            yield family

    answer = Answer()
    async with running_server(tmp_path / "srv", metrics=MetricsConfig(token="t")) as server, client(server) as http:
        register_collector(answer)
        try:
            async with http.get("/metrics", headers={"Authorization": "Bearer t"}) as resp:
                assert samples(await resp.text())[("helpline_test_answer", ())] == 42
        finally:
            unregister_collector(answer)
        async with http.get("/metrics", headers={"Authorization": "Bearer t"}) as resp:
            assert ("helpline_test_answer", ()) not in samples(await resp.text())


async def test_no_token_means_no_metrics_on_the_console_port(tmp_path: Path) -> None:
    """Deny by default: without [metrics] token the route answers 404, even with a Bearer header."""
    async with running_server(tmp_path / "srv") as server, client(server) as http:
        async with http.get("/metrics", headers={"Authorization": "Bearer "}) as resp:
            assert resp.status == 404
        async with http.get("/healthz") as resp:
            assert resp.status == 200 and (await resp.json())["status"] == "alive"


async def test_readyz_on_sqlite_turns_503_when_the_file_is_gone(tmp_path: Path) -> None:
    """Ready with a readable database; 503 naming the database once the file cannot be opened; ready again."""
    async with running_server(tmp_path / "srv", database_url=f"sqlite:///{tmp_path / 'srv' / 'db.sqlite'}") as server, \
            client(server) as http:
        async with http.get("/readyz") as resp:
            body = await resp.json()
            assert resp.status == 200, body
            assert body["checks"] == {"database": "ok", "migrations": "current", "listeners": "up"}
        db_file = tmp_path / "srv" / "db.sqlite"
        hidden = tmp_path / "moved.sqlite"
        shutil.move(db_file, hidden)

        async def status() -> int:
            async with http.get("/readyz") as resp:
                return resp.status

        await wait_until(lambda: _is(status, 503), timeout=10, interval=0.3, what="readyz 503")
        async with http.get("/readyz") as resp:
            body = await resp.json()
            assert body["checks"]["database"] == "unavailable" and str(tmp_path) not in str(body), body
        shutil.move(hidden, db_file)
        await wait_until(lambda: _is(status, 200), timeout=10, interval=0.3, what="readyz 200 again")


async def _is(status, wanted: int) -> bool:  # type: ignore[no-untyped-def]
    return bool(await status() == wanted)


async def test_readyz_on_postgresql_turns_503_when_it_stops(tmp_path: Path) -> None:
    """A private PostgreSQL cluster stopped under a running server: /readyz 503; started again: 200."""
    assert os.geteuid() == 0, "the private PostgreSQL cluster runs as the postgres user: run as root (CI does)"
    with private_cluster() as cluster:
        async with running_server(tmp_path / "srv", database_url=cluster.url) as server, client(server) as http:
            async def status() -> int:
                async with http.get("/readyz") as resp:
                    return resp.status

            await wait_until(lambda: _is(status, 200), timeout=10, interval=0.3, what="ready")
            cluster.stop()
            await wait_until(lambda: _is(status, 503), timeout=20, interval=0.3, what="readyz 503 with PG down")
            async with http.get("/readyz") as resp:
                body = await resp.json()
                assert body["checks"]["database"] in ("unavailable", "timeout"), body
                assert "postgresql://" not in str(body)
            cluster.start()
            await wait_until(lambda: _is(status, 200), timeout=60, interval=0.5, what="ready again")


def test_config_sections_and_listen_checks(tmp_path: Path) -> None:
    """[metrics] and [siem] come from their own tables; the plain listener takes loopback addresses only."""
    path = tmp_path / "server.toml"
    path.write_text('[server]\nconsole_port = 9444\n[metrics]\ntoken = "abc"\nlisten = "127.0.0.1:9464"\n'
                    '[siem]\njson_url = "https://siem.example/ingest"\n')
    config = load_sections(ServerConfig(), path)
    assert config.metrics.token == "abc" and config.siem.json_url == "https://siem.example/ingest"
    assert parse_listen("[::1]:9464") == ("::1", 9464)
    with pytest.raises(ValueError, match="loopback"):
        parse_listen("0.0.0.0:9464")


def test_tunnel_bytes_only_grow() -> None:
    """Relay counters folded into monotonic totals: growth counted once, an ended session keeps what was sampled."""
    from types import SimpleNamespace

    from server.ops.metrics import _Tunnels

    relay = SimpleNamespace(bytes_to_agent=100, bytes_to_technician=5000)
    tunnels = _Tunnels()
    tunnels.sample({"s-1": SimpleNamespace(relay=relay), "s-2": SimpleNamespace(relay=None)})
    relay.bytes_to_agent, relay.bytes_to_technician = 150, 9000
    tunnels.sample({"s-1": SimpleNamespace(relay=relay)})
    assert tunnels.total == {"to_agent": 150, "to_technician": 9000}
    tunnels.sample({})  # the session ended
    fresh = SimpleNamespace(bytes_to_agent=10, bytes_to_technician=20)
    tunnels.sample({"s-3": SimpleNamespace(relay=fresh)})
    assert tunnels.total == {"to_agent": 160, "to_technician": 9020}


async def test_a_database_error_is_scrape_database_ok_0_not_a_500(tmp_path: Path) -> None:
    """A query error that is not an outage (a missing table) still answers 200 with scrape_database_ok 0."""
    metrics = MetricsConfig(token="scrape-secret")
    async with running_server(tmp_path / "srv", metrics=metrics) as server, client(server) as http:
        auth = {"Authorization": "Bearer scrape-secret"}
        await server.db.execute("ALTER TABLE task_runs RENAME TO task_runs_hidden")
        try:
            async with http.get("/metrics", headers=auth) as resp:
                assert resp.status == 200
                assert samples(await resp.text())[("helpline_scrape_database_ok", ())] == 0
        finally:
            await server.db.execute("ALTER TABLE task_runs_hidden RENAME TO task_runs")
