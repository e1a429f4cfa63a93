"""Ingest and API benchmarks for the CMDB.

* health samples ingested per second through the real handler (``server.cmdb.ingest.on_health``:
  validation, one transaction per 500-sample batch, rollups, alert evaluation), SQLite and,
  when ``HELPLINE_TEST_PG_URL`` is set, PostgreSQL;
* device list API p95 with 10,000 devices over HTTPS on a real server.

Run: ``.venv/bin/python -m benchmarks.ingest`` (targets: ≥ 20,000 samples/s; p95 < 200 ms).
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from certs import tls
from protocol.messages import Error, HealthBatch, HealthSample, Message
from server import devices
from server.api.context import AUTHENTICATORS
from server.auth.rights import ALL_RIGHTS, Principal
from server.cmdb import ingest
from server.store import Database, open_database


class _Server:
    def __init__(self, db: Database) -> None:
        self.db = db


class _Conn:
    def __init__(self, db: Database, device_id: str) -> None:
        self.server, self.device_id, self.group = _Server(db), device_id, "bench"
        self.hello = None  # no "health.partial": the plain ack, as before
        self.errors = 0

    async def send(self, message: Message) -> None:
        if isinstance(message, Error):
            self.errors += 1

    async def reply_error(self, code: str, message: str, in_reply_to: str | None) -> None:
        self.errors += 1


def _metrics(rng: random.Random) -> dict[str, Any]:
    return {"ts": "2026-01-01T00:00:00Z", "cpu_percent": rng.uniform(0, 60), "load1": 0.5, "load5": 0.4,
            "load15": 0.3, "mem_percent": rng.uniform(20, 70), "swap_percent": 0.0,
            "disks": {"/": rng.uniform(30, 60), "/home": rng.uniform(30, 60)}, "temperatures": {},
            "battery_percent": None, "uptime_s": 1000, "net_rx_bps": 1200.0, "net_tx_bps": 800.0}


async def bench_ingest(url: str, *, devices_n: int = 20, batches_per_device: int = 5, batch: int = 500) -> float:
    db = await open_database(url)
    rng = random.Random(1)
    try:
        async with db.transaction() as tx:
            await devices.ensure_group(tx, "bench")
            for i in range(devices_n):
                await devices.register(tx, f"bench-{i}", "bench", "s", time.time() + 86400)
        work = []
        t0 = time.time() - 86400
        for b in range(batches_per_device):
            for i in range(devices_n):
                samples = [HealthSample(seq=b * batch + k + 1, ts=t0 + (b * batch + k) * 60, metrics=_metrics(rng))
                           for k in range(batch)]
                work.append((_Conn(db, f"bench-{i}"), HealthBatch(samples=samples)))
        start = time.perf_counter()
        for conn, message in work:
            await ingest.on_health(conn, message)  # type: ignore[arg-type]
        elapsed = time.perf_counter() - start
        assert all(c.errors == 0 for c, _ in work)
        return len(work) * batch / elapsed
    finally:
        await db.close()


async def bench_device_list(n: int = 10_000, requests: int = 200) -> dict[str, float]:
    from tests.harness import console_url, running_server

    with tempfile.TemporaryDirectory() as tmp:
        async with running_server(Path(tmp) / "srv") as server:
            admin = Principal("bench", "bench", "admin", {"*": ALL_RIGHTS})

            async def authenticator(_request: Any) -> Principal:
                return admin

            server.console_app[AUTHENTICATORS].append(authenticator)
            now = time.time()
            groups = [f"group-{g}" for g in range(20)]
            for g in groups:
                await devices.ensure_group(server.db, g)
            rows = [(f"dev-{i:05d}-{secrets.token_hex(3)}", groups[i % 20], f"host-{i:05d}", "serial", now + 86400,
                     now, now - i * 30, 1 if i % 3 else 0) for i in range(n)]
            await server.db.executemany(
                "INSERT INTO devices (id, group_name, hostname, cert_serial, cert_not_after, enrolled_at, last_seen,"
                " online) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
            await server.db.executemany(
                "INSERT INTO cmdb_devices (device_id, os, ip, serial, alerts_open) VALUES (?, ?, ?, ?, ?)",
                [(r[0], "Debian GNU/Linux 12", f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", f"SN{i}",
                  1 if i % 50 == 0 else 0) for i, r in enumerate(rows)])
            queries = ["/api/v1/devices", "/api/v1/devices?sort=last_seen&order=desc&page=40",
                       "/api/v1/devices?q=host-0999", "/api/v1/devices?status=offline&sort=status",
                       "/api/v1/devices?alert=open&per_page=200", "/api/v1/devices?group=group-7&sort=group",
                       "/api/v1/devices?q=10.0.3&per_page=200&page=1"]
            ssl = tls.agent_client_context(server.pki.ca_pem, None, None)
            timings: list[float] = []
            async with aiohttp.ClientSession(base_url=console_url(server)) as session:
                for i in range(requests):
                    start = time.perf_counter()
                    async with session.get(queries[i % len(queries)], ssl=ssl) as resp:
                        body = await resp.json()
                        assert resp.status == 200, body
                    timings.append((time.perf_counter() - start) * 1000)
            timings.sort()
            return {"p50_ms": statistics.median(timings), "p95_ms": timings[int(len(timings) * 0.95) - 1],
                    "max_ms": timings[-1]}


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rate = await bench_ingest(f"sqlite:///{Path(tmp) / 'bench.db'}")
        print(f"health ingest, SQLite:     {rate:,.0f} samples/s (batches of 500, real handler)")
    pg = os.environ.get("HELPLINE_TEST_PG_URL")
    if pg:
        import asyncpg

        schema = f"bench_{secrets.token_hex(4)}"
        admin = await asyncpg.connect(pg)
        await admin.execute(f"CREATE SCHEMA {schema}")
        try:
            rate = await bench_ingest(f"{pg}{'&' if '?' in pg else '?'}search_path={schema}")
            print(f"health ingest, PostgreSQL: {rate:,.0f} samples/s (batches of 500, real handler)")
        finally:
            await admin.execute(f"DROP SCHEMA {schema} CASCADE")
            await admin.close()
    else:
        print("health ingest, PostgreSQL: skipped (set HELPLINE_TEST_PG_URL)")
    result = await bench_device_list()
    print(f"device list API, 10,000 devices: p50 {result['p50_ms']:.1f} ms, p95 {result['p95_ms']:.1f} ms, "
          f"max {result['max_ms']:.1f} ms")


if __name__ == "__main__":
    asyncio.run(main())
