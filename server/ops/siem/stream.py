"""The live audit stream: every committed audit record, in order, to each configured sink.

The queue is the audit log itself: records are read from ``audit_log`` after each sink's
cursor (``DATA/siem/<sink>.cursor``: the last acknowledged seq and where it was sent), at most
``[siem] batch`` at a time. So a SIEM outage loses nothing — the records wait in the database
however long it lasts, on disk and bounded only by the log — and blocks nothing: writers never
wait for a sink, which only reads. A sink wakes right after each :func:`server.audit.append`
commits (:func:`server.audit.on_append`) and polls every ``poll_s`` for records appended inside
other transactions or by other processes. After a failure it retries with backoff, logging
once per outage. On restart it resumes from the cursor; a new destination starts from record 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from common.files import atomic_write, private_directory
from server import audit
from server.config import SiemConfig
from server.store import Database

from .records import head_seq, read_after
from .sinks import JsonFile, JsonHttp, Sink, SyslogTls, syslog_context

if TYPE_CHECKING:
    from server.app import HelplineServer
    from server.ops.metrics import Metrics

log = logging.getLogger(__name__)

BACKOFF_S = (0.5, 1.0, 2.0, 5.0)


def sinks_from(config: SiemConfig, node: str) -> list[Sink]:
    sinks: list[Sink] = []
    if config.syslog:
        context = syslog_context(config.syslog_ca, config.syslog_client_cert, config.syslog_client_key)
        sinks.append(SyslogTls(config.syslog, context, config.syslog_server_name, node))
    if config.json_file is not None:
        sinks.append(JsonFile(config.json_file, node))
    if config.json_url:
        sinks.append(JsonHttp(config.json_url, config.json_url_ca, node, config.json_url_authorization))
    return sinks


class Cursor:
    """The last acknowledged seq of one sink, for one destination, in a small file written atomically."""

    def __init__(self, path: Path, destination: str) -> None:
        self.path = path
        self.destination = destination
        self.seq = 0
        try:
            data = json.loads(path.read_text())
            if data.get("destination") == destination:
                self.seq = int(data["seq"])
        except FileNotFoundError:
            self.seq = 0  # a new sink: from the first record
        except (ValueError, KeyError, TypeError):
            log.warning("unreadable SIEM cursor %s; sending from the start", path)

    def advance(self, seq: int) -> None:
        self.seq = seq
        atomic_write(self.path, json.dumps({"seq": seq, "destination": self.destination}), 0o600)


class SinkStream:
    """One sink's loop: read after the cursor, send, advance; wait for the next record."""

    def __init__(self, db: Database, sink: Sink, cursor: Cursor, config: SiemConfig,
                 metrics: Metrics | None = None) -> None:
        self.db = db
        self.sink = sink
        self.cursor = cursor
        self.config = config
        self.metrics = metrics
        self.wake = asyncio.Event()
        self.delivered = asyncio.Event()  # set after each acknowledged batch (tests wait on it)

    async def run(self) -> None:
        failures = 0
        try:
            while True:
                self.wake.clear()  # before reading: a record committed meanwhile wakes the wait below
                try:
                    sent = await self._pass()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    current = asyncio.current_task()
                    if current is not None and current.cancelling():
                        raise asyncio.CancelledError from exc  # a stop that raced a failure still stops
                    rewind = self.sink.rewind()
                    if rewind is not None and rewind < self.cursor.seq:
                        await asyncio.to_thread(self.cursor.advance, rewind)
                    if failures == 0:
                        log.warning("SIEM sink %s failing (%s: %s); retrying, nothing is dropped", self.sink.name,
                                    type(exc).__name__, exc, extra={"destination": self.sink.destination})
                    failures += 1
                    await asyncio.sleep(BACKOFF_S[min(failures - 1, len(BACKOFF_S) - 1)])
                    continue
                if failures:
                    log.info("SIEM sink %s delivers again after %d failed attempts", self.sink.name, failures)
                    failures = 0
                if not sent:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.config.poll_s):
                            await self.wake.wait()
        finally:
            await self.sink.close()

    async def _pass(self) -> int:
        """Send one batch after the cursor; return how many records went."""
        records = await read_after(self.db, self.cursor.seq, max(1, self.config.batch))
        if self.metrics is not None:
            self.metrics.siem_backlog[self.sink.name] = max(0, await head_seq(self.db) - self.cursor.seq)
        if not records:
            return 0
        await self.sink.send(records)
        await asyncio.to_thread(self.cursor.advance, records[-1]["seq"])
        if self.metrics is not None:
            self.metrics.siem_backlog[self.sink.name] = max(0, await head_seq(self.db) - self.cursor.seq)
        self.delivered.set()
        self.delivered = asyncio.Event()
        return len(records)


def setup(server: HelplineServer, metrics: Metrics | None) -> None:
    """Start a stream per configured sink once the server runs (configuration errors fail setup)."""
    config = server.config.siem
    sinks = sinks_from(config, socket.gethostname())
    if not sinks:
        return
    directory = server.config.data_dir / "siem"

    async def run(sink: Sink) -> None:
        await asyncio.to_thread(private_directory, directory)
        cursor = await asyncio.to_thread(Cursor, directory / f"{sink.name}.cursor", sink.destination)
        stream = SinkStream(server.db, sink, cursor, config, metrics)
        audit.on_append(server.db, lambda _seq: stream.wake.set())
        log.info("streaming the audit log to %s from record %d", sink.name, cursor.seq + 1,
                 extra={"destination": sink.destination})
        await stream.run()

    for sink in sinks:
        server.background.append(lambda sink=sink: run(sink))  # type: ignore[misc]
