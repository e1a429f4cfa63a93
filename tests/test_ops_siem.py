"""The SIEM stream: a real server streams every audit record to a local RFC 5425 syslog-over-TLS
listener (real TLS, a test CA, a client certificate), a JSON-lines file and an HTTP receiver."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from certs import tls
from certs.pki import CertificateAuthority, build_csr, generate_device_key, init_pki, private_key_pem
from server import audit
from server.config import SiemConfig
from server.ops.siem.records import BOM, SD_ID
from tests.harness import running_server, wait_until
from tests.procs import free_port


class SyslogListener:
    """RFC 5425 receiver: TLS with a required client certificate, octet-counted frames."""

    def __init__(self, pki: Path, port: int) -> None:
        self.context = tls.agent_listener_context(pki / "ca.pem", pki / "server.pem", pki / "server.key")
        self.port = port
        self.messages: list[str] = []
        self.peers: list[str] = []
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, ssl=self.context)

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.wait_closed(), 10)
        self.writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        cert = writer.get_extra_info("ssl_object").getpeercert()
        self.peers.append(str(cert.get("subject")))
        try:
            while True:
                length = await reader.readuntil(b" ")
                assert length[:-1].isdigit(), length
                self.messages.append((await reader.readexactly(int(length[:-1]))).decode())
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass

    def records(self) -> dict[int, dict[str, Any]]:
        """Records by seq (repeats after a reconnect collapse: they are the same record)."""
        found: dict[int, dict[str, Any]] = {}
        for message in self.messages:
            header = re.match(r"<(\d+)>1 (\S+) (\S+) helpline (\d+) (\S+) \[" + re.escape(SD_ID) + r" ([^\]]*)\] ",
                              message)
            assert header, message
            assert header.group(1) == "110"
            record = json.loads(message.split(BOM, 1)[1])
            assert f'seq="{record["seq"]}"' in header.group(6) and f'hash="{record["hash"]}"' in header.group(6)
            stamp = datetime.strptime(header.group(2), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
            assert abs(stamp.timestamp() - record["ts"]) < 0.001
            if record["seq"] in found:
                assert found[record["seq"]] == record
            found[record["seq"]] = record
        return found


class HttpReceiver:
    def __init__(self, port: int) -> None:
        self.port = port
        self.lines: list[dict[str, Any]] = []
        self.down = False
        app = web.Application()
        app.router.add_post("/ingest", self._ingest)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)

    async def _ingest(self, request: web.Request) -> web.Response:
        assert request.content_type == "application/x-ndjson"
        if self.down:
            return web.Response(status=503)
        self.lines += [json.loads(line) for line in (await request.read()).splitlines() if line]
        return web.Response(status=204)

    def records(self) -> dict[int, dict[str, Any]]:
        return {r["seq"]: r for r in self.lines}


def verify(records: dict[int, dict[str, Any]], head: int) -> None:
    """Seq 1..head all there, each hash right, each linked to the one before."""
    assert sorted(records) == list(range(1, head + 1)), f"missing: {set(range(1, head + 1)) - set(records)}"
    prev = audit.GENESIS
    for seq in range(1, head + 1):
        r = records[seq]
        assert r["prev_hash"] == prev, seq
        assert audit.record_hash(r["prev_hash"], r["seq"], r["ts"], r["actor"], r["action"], r["target"],
                                 r["details"]) == r["hash"], seq
        prev = r["hash"]


def client_certificate(pki: Path, out: Path) -> tuple[Path, Path]:
    ca = CertificateAuthority.load(pki)
    key = generate_device_key()
    cert = ca.sign_device_csr(build_csr(key), "siem-client-node", now=datetime.now(UTC))
    (out / "client.pem").write_bytes(ca.chain_pem(cert))
    (out / "client.key").write_bytes(private_key_pem(key))
    return out / "client.pem", out / "client.key"


@contextlib.asynccontextmanager
async def receivers(tmp_path: Path) -> AsyncIterator[tuple[SyslogListener, HttpReceiver, SiemConfig]]:
    pki = tmp_path / "siem-pki"
    init_pki(pki, ["localhost", "127.0.0.1"])
    cert, key = client_certificate(pki, tmp_path)
    syslog = SyslogListener(pki, free_port())
    http = HttpReceiver(free_port())
    await syslog.start()
    await http.runner.setup()
    await web.TCPSite(http.runner, "127.0.0.1", http.port).start()
    config = SiemConfig(syslog=f"127.0.0.1:{syslog.port}", syslog_ca=pki / "ca.pem", syslog_server_name="localhost",
                        syslog_client_cert=cert, syslog_client_key=key, json_file=tmp_path / "audit.jsonl",
                        json_url=f"http://127.0.0.1:{http.port}/ingest", poll_s=0.5)
    try:
        yield syslog, http, config
    finally:
        with contextlib.suppress(Exception):
            await syslog.stop()
        await http.runner.cleanup()


def file_records(path: Path) -> tuple[dict[int, dict[str, Any]], list[int]]:
    lines = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return {r["seq"]: r for r in lines}, [r["seq"] for r in lines]


async def test_records_arrive_in_order_and_an_outage_loses_nothing(tmp_path: Path) -> None:
    """Syslog/TLS, file and HTTP get every record with hashes that verify; listener down then up (and the
    HTTP receiver answering 503 meanwhile): nothing lost; a restarted server resumes without repeating."""
    async with receivers(tmp_path) as (syslog, http, siem):
        async with running_server(tmp_path / "srv", siem=siem) as server:
            for i in range(20):
                await audit.append(server.db, "user:test", "ops.test", f"t{i}", {"i": i, "quote": 'a"]\\b'})
            head = (await audit.head(server.db)).seq  # type: ignore[union-attr]

            def all_there(n: int) -> bool:
                return (len(syslog.records()) >= n and len(http.records()) >= n
                        and len(file_records(siem.json_file)[0]) >= n)  # type: ignore[arg-type]

            await wait_until(lambda: all_there(head), timeout=30, what="all records at every sink")
            verify(syslog.records(), head)
            verify(http.records(), head)
            in_file, order = file_records(siem.json_file)  # type: ignore[arg-type]
            verify(in_file, head)
            assert order == sorted(order), "records reached the file out of order"
            assert syslog.peers and "siem-client-node" in syslog.peers[0]  # our client certificate was presented

            # The SIEM goes away: the server keeps writing audit records, unblocked.
            await syslog.stop()
            http.down = True
            for i in range(30):
                await audit.append(server.db, "user:test", "ops.outage", f"o{i}")
            head = (await audit.head(server.db)).seq  # type: ignore[union-attr]
            await wait_until(lambda: len(file_records(siem.json_file)[0]) >= head, timeout=30,  # type: ignore[arg-type]
                             what="the file sink, unaffected")
            assert len(http.records()) < head
            await syslog.start()
            http.down = False
            await wait_until(lambda: all_there(head), timeout=60, what="everything after the outage")
            verify(syslog.records(), head)
            verify(http.records(), head)

        # A restart resumes from each sink's acknowledged cursor: the file gets no record twice.
        async with running_server(tmp_path / "srv", siem=siem) as server:
            await audit.append(server.db, "user:test", "ops.after-restart", "r")
            head = (await audit.head(server.db)).seq  # type: ignore[union-attr]
            await wait_until(lambda: all_there(head), timeout=30, what="the record after the restart")
            in_file, order = file_records(siem.json_file)  # type: ignore[arg-type]
            verify(in_file, head)
            assert len(order) == len(set(order)) == head, "a restart repeated records in the file"
            verify(syslog.records(), head)


async def test_unverified_syslog_receiver_gets_nothing(tmp_path: Path) -> None:
    """A receiver whose certificate does not chain to [siem] syslog_ca gets no record (verified TLS)."""
    async with receivers(tmp_path) as (syslog, _http, siem):
        other = tmp_path / "other-pki"
        init_pki(other, ["localhost"])
        wrong = SiemConfig(syslog=siem.syslog, syslog_ca=other / "ca.pem", syslog_server_name="localhost",
                           syslog_client_cert=siem.syslog_client_cert, syslog_client_key=siem.syslog_client_key,
                           json_file=tmp_path / "control.jsonl", poll_s=0.5)
        async with running_server(tmp_path / "srv", siem=wrong) as server:
            await audit.append(server.db, "user:test", "ops.test", "x")
            head = (await audit.head(server.db)).seq  # type: ignore[union-attr]
            await wait_until(lambda: len(file_records(wrong.json_file)[0]) >= head, timeout=30,  # type: ignore[arg-type]
                             what="the control sink")
            assert syslog.messages == []


async def test_http_sink_follows_no_redirect_and_keeps_its_secrets(tmp_path: Path, caplog: Any) -> None:
    """A 307 from the endpoint is a failure, not a new destination (records never reach where it points);
    the URL's userinfo and query and the Authorization header never reach the logs or the cursor file."""
    import logging

    seen: dict[str, Any] = {"redirects": 0, "auth": []}
    lines: list[dict[str, Any]] = []

    async def redirect(_request: web.Request) -> web.Response:
        seen["redirects"] += 1
        raise web.HTTPTemporaryRedirect("/ingest")

    async def ingest(request: web.Request) -> web.Response:
        seen["auth"].append(request.headers.get("Authorization"))
        lines.extend(json.loads(line) for line in (await request.read()).splitlines() if line)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/redirect", redirect)
    app.router.add_post("/ingest", ingest)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    caplog.set_level(logging.DEBUG)
    try:
        redirected = SiemConfig(json_url=f"http://user:pass-secret@127.0.0.1:{port}/redirect?token=query-secret",
                                json_file=tmp_path / "control.jsonl", poll_s=0.5)
        async with running_server(tmp_path / "srv", siem=redirected) as server:
            await audit.append(server.db, "user:test", "ops.test", "x")
            head = (await audit.head(server.db)).seq  # type: ignore[union-attr]
            await wait_until(lambda: len(file_records(redirected.json_file)[0]) >= head  # type: ignore[arg-type]
                             and seen["redirects"] >= 2, timeout=30, what="the control sink and retried redirects")
            assert lines == [], "the sink followed the redirect"

        direct = SiemConfig(json_url=f"http://127.0.0.1:{port}/ingest?token=query-secret",
                            json_url_authorization="Bearer header-secret", poll_s=0.5)
        async with running_server(tmp_path / "srv", siem=direct) as server:
            await audit.append(server.db, "user:test", "ops.test", "y")
            head = (await audit.head(server.db)).seq  # type: ignore[union-attr]
            cursor_file = tmp_path / "srv" / "siem" / "http.cursor"

            def acknowledged() -> bool:
                return cursor_file.exists() and json.loads(cursor_file.read_text())["seq"] >= head

            await wait_until(acknowledged, timeout=30, what="records over http, acknowledged")
            assert {r["seq"] for r in lines} >= {head} and set(seen["auth"]) == {"Bearer header-secret"}
            cursor = cursor_file.read_text()
            assert json.loads(cursor)["destination"] == f"http://127.0.0.1:{port}/ingest"
    finally:
        await runner.cleanup()
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "streaming the audit log to http" in logged
    for secret in ("pass-secret", "query-secret", "header-secret"):
        assert secret not in logged and secret not in cursor, secret


async def test_a_failed_file_write_leaves_no_half_line(tmp_path: Path) -> None:
    """The file sink on a full disk (a 64 KiB tmpfs): the failed batch is cut back to the old size, so the
    file holds whole lines only; once there is room the retry appends the batch whole."""
    import os
    import subprocess

    from server.ops.siem.sinks import JsonFile

    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(mount)], check=True)
    try:
        sink = JsonFile(mount / "audit.jsonl", "node-1")

        def record(seq: int, size: int) -> dict[str, Any]:
            return {"seq": seq, "ts": 1.0, "actor": "a", "action": "x", "target": "t", "details": "d" * size,
                    "prev_hash": "p", "hash": "h"}

        await sink.send([record(1, 100)])
        before = (mount / "audit.jsonl").read_bytes()
        filler = mount / "filler"
        with contextlib.suppress(OSError), filler.open("wb") as f:  # fill what is left but ~8 KiB
            f.write(b"\0" * (64 * 1024 - len(before) - 8192))
        with pytest.raises(OSError):
            await sink.send([record(2, 6000), record(3, 6000)])  # ~12 KiB: fails partway
        assert (mount / "audit.jsonl").read_bytes() == before
        os.unlink(filler)
        await sink.send([record(2, 6000), record(3, 6000)])
        assert [json.loads(line)["seq"] for line in (mount / "audit.jsonl").read_text().splitlines()] == [1, 2, 3]
    finally:
        subprocess.run(["umount", str(mount)], check=True)
