"""Agent feature: report inventory and health to the CMDB without losing anything.

* On every connection: send the inventory — full when the server has none, when its
  checksums differ from the ones it last acknowledged to us, when it asks, or daily;
  otherwise only the changed sections — then drain the health outbox in batches of at
  most 500, waiting for each ``health.ack`` before deleting anything.
* Always (online or not): sample health every ``health_interval_s`` into the outbox — a
  background task the client owns (started by ``client.run``, ended when it returns).
* If the server stores higher seqs than our outbox ever handed out (``welcome.health_seq``:
  the outbox file was lost while the identity stayed), renumber above them before sending,
  or the server would take new samples for duplicates.
* Nothing bad blocks the stream (issue 12): samples are trimmed to the size limit before they
  are stored and again before they are sent (:func:`agent.health.fit_metrics`); samples the
  server refuses are named in its ack and deleted with it; an ``error`` reply wakes the waiting
  batch at once and :class:`agent.delivery.DrainPlan` bisects it down to the bad sample, which is
  deleted. Every such loss is logged with its reason and counted (``delivery.rejected`` in the
  following samples). An inventory section the server refuses is not sent again until it changes.

Collection and sampling run in threads so the event loop never blocks on psutil,
subprocesses or disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from common.files import atomic_write
from common.outage import reason
from protocol import limits
from protocol.messages import (
    Error,
    HealthAck,
    HealthBatch,
    HealthGap,
    HealthSample,
    InventoryAck,
    InventoryReport,
    InventoryRequest,
    Message,
)

from .backoff import full_jitter
from .control_client import AgentClient
from .delivery import DrainPlan, Shape, Verdict
from .health import fit_metrics, metrics_size
from .outbox import Item, Outbox, max_items_for

if TYPE_CHECKING:
    from .inventory import InventoryPolicy

log = logging.getLogger(__name__)

HEALTH = "health"
#: Seconds to wait for an ack before sending the same batch again (the server dedups).
ACK_TIMEOUT_S = 30.0

#: Refusals named in one log line (the count is always complete).
LOGGED_REFUSALS = 5


@dataclass
class Acked:
    """The checksums the server last acknowledged, and when it last got a full inventory.

    ``rejected``: section → our checksum the server refused; not sent again in deltas until it changes.
    """

    checksums: dict[str, str]
    last_full: float
    rejected: dict[str, str] = field(default_factory=dict)


def acked_path(state_dir: Path) -> Path:
    return state_dir / "inventory_acked.json"


def read_acked(path: Path) -> Acked | None:
    """The persisted server acknowledgement, or None (never acked / unreadable: send a full one)."""
    try:
        data = json.loads(path.read_text())
        return Acked(dict(data["checksums"]), float(data["last_full"]), dict(data.get("rejected") or {}))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring unreadable %s: %s", path, exc)
        return None


def write_acked(path: Path, acked: Acked) -> None:
    atomic_write(path, json.dumps({"checksums": acked.checksums, "last_full": acked.last_full,
                                   "rejected": acked.rejected}))


class Reporter:
    def __init__(self, client: AgentClient) -> None:
        self.client = client
        config = client.config
        client.state.directory.mkdir(parents=True, exist_ok=True)
        self.outbox = Outbox(client.state.outbox_path,
                             max_items=max_items_for(config.outbox_max_days, config.health_interval_s))
        self.acked_path: Path = acked_path(client.state.directory)
        self.plan = DrainPlan()
        self.samples_taken = 0
        self.samples_trimmed = 0
        self._sampler: Any = None
        #: The inventory source (tests may swap it; default: every collector).
        self.collect: Callable[[], dict[str, Any]] | None = None
        self._new_sample = asyncio.Event()
        self._waiters: dict[str, asyncio.Future[Message]] = {}
        self._inventory_waiter: asyncio.Future[Message] | None = None
        self._inventory_lock = asyncio.Lock()
        self._force_full = False
        #: A personal-data policy the server pushed since this connection's welcome (``inventory.request``).
        self._pushed_policy: InventoryPolicy | None = None
        self._sampling: asyncio.Future[None] | None = None
        self._sampling_stopped = False

    # --- lifecycle ----------------------------------------------------------------------------

    async def sample_forever(self, _client: AgentClient) -> None:
        """The client's background task: sample every interval until cancelled or :meth:`stop_sampling`."""
        if self._sampling_stopped:
            return
        self._sampling = asyncio.ensure_future(self._sample_loop())
        await self._sampling

    async def stop_sampling(self) -> None:
        """Stop sampling for good (the outbox still drains)."""
        self._sampling_stopped = True
        if self._sampling is not None:
            self._sampling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampling

    async def stop(self, _client: AgentClient | None = None) -> None:
        """Stop sampling and close the outbox (the client's stop hook; safe to call again)."""
        await self.stop_sampling()
        await asyncio.to_thread(self.outbox.close)

    # --- health -------------------------------------------------------------------------------

    def _sample(self, now: float) -> dict[str, Any]:
        if self._sampler is None:
            from .health import HealthSampler

            self._sampler = HealthSampler()
        metrics: dict[str, Any] = self._sampler.sample(now)
        rejected = self.outbox.rejected_total(HEALTH)
        if rejected:  # reported, not only logged: the server stores it with the sample
            metrics["delivery"] = {"rejected": rejected}
        fitted = fit_metrics(metrics)
        if "truncated" in fitted:
            self.samples_trimmed += 1
            if self.samples_trimmed == 1:  # the same every sample on such a host: say it once
                log.warning("health sample over the size limit; least relevant entries left out",
                            extra={"limit": limits.MAX_HEALTH_METRICS_BYTES, "truncated": fitted["truncated"]})
        return fitted

    async def sample_once(self) -> int:
        now = time.time()
        metrics = await asyncio.to_thread(self._sample, now)
        seq = await asyncio.to_thread(self.outbox.add, HEALTH, metrics, now)
        self.samples_taken += 1
        self._new_sample.set()
        return seq

    async def _sample_loop(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.client.config.health_interval_s
        next_at = loop.time()
        while True:
            try:
                await self.sample_once()
            except Exception:
                log.exception("health sample failed")
            next_at += interval
            if next_at < loop.time():  # fell behind (suspend, slow disk): don't burst, skip ahead
                next_at = loop.time() + interval
            await asyncio.sleep(next_at - loop.time())

    def _pending(self) -> tuple[list[Item], list[int]]:
        """The oldest pending samples, each trimmed in the outbox first if over the size limit, and their sizes."""
        items = self.outbox.pending(HEALTH, self.plan.max_samples)
        sizes: list[int] = []
        for n, item in enumerate(items):
            size = metrics_size(item.body)
            if size > limits.MAX_HEALTH_METRICS_BYTES:  # stored by an older agent, or by hand
                fitted = fit_metrics(item.body)
                self.outbox.repair(HEALTH, item.seq, fitted)
                log.warning("pending health sample over the size limit; trimmed before sending",
                            extra={"seq": item.seq, "bytes": size, "truncated": fitted.get("truncated")})
                items[n] = Item(item.seq, item.kind, item.ts, fitted)
                size = metrics_size(fitted)
            sizes.append(size)
        return items, sizes

    async def flush_health(self) -> None:
        """Send the backlog oldest first, one batch in flight; forever (cancelled with the connection)."""
        troubles = 0  # consecutive server-side errors: wait longer each time
        while True:
            self._new_sample.clear()
            pending, sizes = await asyncio.to_thread(self._pending)
            gaps = (await asyncio.to_thread(self.outbox.gaps, HEALTH))[:limits.MAX_HEALTH_BATCH]
            if not pending and not gaps:
                await self._new_sample.wait()
                continue
            shape = self.plan.shape([(i.seq, size) for i, size in zip(pending, sizes, strict=True)], bool(gaps))
            items, sent_gaps = pending[:shape.samples], gaps if shape.gaps else []
            batch = HealthBatch(samples=[HealthSample(seq=i.seq, ts=i.ts, metrics=i.body) for i in items],
                                gaps=[HealthGap(from_seq=g.from_seq, to_seq=g.to_seq, dropped=g.dropped)
                                      for g in sent_gaps])
            try:
                answer = await self._request(batch)
            except TimeoutError:
                log.warning("no health.ack in time; sending the batch again", extra={"samples": len(items)})
                continue
            if isinstance(answer, Error):
                troubles = await self._on_refused(answer, shape, items, sent_gaps, troubles)
                continue
            assert isinstance(answer, HealthAck)
            troubles = 0
            deleted = await asyncio.to_thread(self.outbox.ack, HEALTH, answer.up_to, sent_gaps)
            rejected = answer.rejected if not isinstance(answer.rejected, msgspec.UnsetType) else []
            if rejected:
                await asyncio.to_thread(self.outbox.count_rejected, HEALTH, len(rejected))
                log.warning("server refused health samples; deleted", extra={
                    "count": len(rejected),
                    "samples": [f"{r.seq} ({r.code}): {r.reason}" for r in rejected[:LOGGED_REFUSALS]]})
            log.debug("health batch acknowledged", extra={"up_to": answer.up_to, "deleted": deleted})

    async def _on_refused(self, error: Error, shape: Shape, items: list[Item], gaps: list[Any], troubles: int
                          ) -> int:
        """Act on an ``error`` reply to a batch; returns the new count of consecutive server-side troubles."""
        verdict = self.plan.refused(shape, error.code, items[-1].seq if items else -1)
        if verdict is Verdict.RETRY_LATER:
            delay = full_jitter(troubles + 1, cap=ACK_TIMEOUT_S)
            log.warning("server could not take the health batch; sending it again later",
                        extra={"code": error.code, "detail": error.message[:200], "in_s": round(delay, 2)})
            await asyncio.sleep(delay)
            return troubles + 1
        if verdict is Verdict.DROP_SAMPLE:
            seq = items[0].seq
            await asyncio.to_thread(self.outbox.discard, HEALTH, seq)
            log.warning("server refused a health sample; deleted", extra={
                "seq": seq, "code": error.code, "detail": error.message[:200]})
        elif verdict is Verdict.DROP_GAPS:
            await asyncio.to_thread(self.outbox.ack, HEALTH, -1, gaps)
            log.warning("server refused the report of dropped samples; deleted", extra={
                "gaps": len(gaps), "code": error.code, "detail": error.message[:200]})
        else:
            log.info("server refused a health batch; narrowing it down", extra={
                "samples": shape.samples, "gaps": shape.gaps, "code": error.code, "next_limit": self.plan.limit})
        return troubles

    async def _request(self, message: Message) -> Message:
        """Send and wait for the reply naming it (an ack, or an ``error``), at most ACK_TIMEOUT_S."""
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._waiters[message.id] = future
        try:
            await self.client.send(message)
            return await asyncio.wait_for(future, ACK_TIMEOUT_S)
        finally:
            self._waiters.pop(message.id, None)

    def on_reply(self, in_reply_to: str, message: Message) -> None:
        future = self._waiters.get(in_reply_to)
        if future is not None and not future.done():
            future.set_result(message)

    # --- inventory ----------------------------------------------------------------------------

    def load_acked(self) -> Acked | None:
        return read_acked(self.acked_path)

    def save_acked(self, acked: Acked) -> None:
        write_acked(self.acked_path, acked)

    async def build_report(self, server_checksums: dict[str, str] | None, *, on_connect: bool
                           ) -> InventoryReport | None:
        """The report to send now, or None when nothing changed since the last ack (periodic checks)."""
        from .inventory import collect_inventory, compute_delta, section_checksums, welcome_policy

        # The group's personal-data switch and login retention: as pushed since the welcome, else the welcome's.
        policy = self._pushed_policy or welcome_policy(self.client.welcome)
        inventory = await asyncio.to_thread(self.collect or (lambda: collect_inventory(policy=policy)))
        checksums = section_checksums(inventory)
        acked = self.load_acked()
        due = acked is None or time.time() - acked.last_full >= self.client.config.full_inventory_interval_s
        mismatch = on_connect and (server_checksums is None or acked is None or server_checksums != acked.checksums)
        if self._force_full or due or mismatch or acked is None:
            return InventoryReport(full=True, sections=inventory, checksums=checksums)
        held = {name for name, digest in acked.rejected.items() if checksums.get(name) == digest}
        if held:  # refused as they are: claim the server's copy (if any) until they change
            inventory = {name: data for name, data in inventory.items() if name not in held}
            checksums = {name: digest for name, digest in checksums.items() if name not in held}
            checksums.update({name: acked.checksums[name] for name in held if name in acked.checksums})
        delta = compute_delta(inventory, acked.checksums)
        if not delta and not on_connect and checksums == acked.checksums:
            return None
        return InventoryReport(full=False, sections=delta, checksums=checksums)

    async def send_inventory(self, server_checksums: dict[str, str] | None = None, *, on_connect: bool = False
                             ) -> bool:
        """Send full/delta inventory and wait for the ack; True when the server holds our current state."""
        async with self._inventory_lock:
            for _attempt in range(2):
                report = await self.build_report(server_checksums, on_connect=on_connect)
                if report is None:
                    return True
                loop = asyncio.get_running_loop()
                self._inventory_waiter = loop.create_future()
                self._waiters[report.id] = self._inventory_waiter
                try:
                    await self.client.send(report)
                    answer = await asyncio.wait_for(self._inventory_waiter, ACK_TIMEOUT_S)
                finally:
                    self._waiters.pop(report.id, None)
                    self._inventory_waiter = None
                if isinstance(answer, InventoryAck):
                    self._record_ack(report, answer)
                    return True
                if isinstance(answer, Error):
                    log.warning("server refused the inventory report", extra={
                        "code": answer.code, "detail": answer.message[:200], "full": report.full})
                    return False
                log.info("server asked for a full inventory", extra={"reason": getattr(answer, "reason", "")})
                self._force_full = True
            return False

    def _record_ack(self, report: InventoryReport, answer: InventoryAck) -> None:
        previous = self.load_acked()
        last_full = time.time() if report.full else (previous.last_full if previous else 0.0)
        refused = answer.rejected if not isinstance(answer.rejected, msgspec.UnsetType) else []
        rejected = {r.section: report.checksums[r.section] for r in refused if r.section in report.checksums}
        if previous is not None and not report.full:  # still refused unless sent again (and taken) now
            rejected = {**{name: digest for name, digest in previous.rejected.items()
                           if name not in report.sections}, **rejected}
        self.save_acked(Acked(dict(answer.checksums), last_full, rejected))
        self._force_full = False
        if refused:
            log.warning("server refused inventory sections; not sent again until they change", extra={
                "sections": [f"{r.section} ({r.code}): {r.reason}" for r in refused[:LOGGED_REFUSALS]],
                "count": len(refused)})
        log.info("inventory acknowledged", extra={"full": report.full, "sections": len(report.sections),
                                                  "refused": len(refused)})

    async def resend_inventory(self) -> None:
        try:
            await self.send_inventory()
        except (TimeoutError, ConnectionError) as exc:
            log.warning("requested inventory not delivered: %s", _undelivered(exc))

    def on_inventory_request(self, message: InventoryRequest) -> bool:
        """Route a request to the report in flight; False if none (caller sends a full one)."""
        from .inventory import wire_policy

        self._force_full = True
        if not isinstance(message.inventory_policy, msgspec.UnsetType):
            self._pushed_policy = wire_policy(message.inventory_policy)
            log.info("personal-data policy changed by the server", extra={
                "omit": sorted(self._pushed_policy.omit), "login_days": self._pushed_policy.login_days})
        if self._inventory_waiter is not None and not self._inventory_waiter.done():
            self._inventory_waiter.set_result(message)
            return True
        return False

    async def inventory_loop(self) -> None:
        while True:
            await asyncio.sleep(self.client.config.inventory_interval_s)
            try:
                await self.send_inventory()
            except (TimeoutError, ConnectionError) as exc:
                log.warning("periodic inventory not delivered: %s", _undelivered(exc))

    # --- connection ----------------------------------------------------------------------------

    async def renumber_outbox(self, client: AgentClient) -> None:
        """Number pending and future samples above the highest seq the server already stores."""
        stored = client.welcome.health_seq if client.welcome is not None else msgspec.UNSET
        if isinstance(stored, msgspec.UnsetType):
            return  # a server without the field: nothing to compare against
        shift = await asyncio.to_thread(self.outbox.renumber_above, stored)
        if shift:
            log.warning("server stores higher health seqs than this outbox ever issued (outbox lost?);"
                        " renumbered", extra={"server_seq": stored, "shift": shift})

    async def on_ready(self, client: AgentClient) -> None:
        """Per connection: renumber if needed, inventory, then the periodic check and the health drain."""
        await self.renumber_outbox(client)
        self._pushed_policy = None  # this connection's welcome carries the current policy
        server_checksums = client.welcome.inventory_checksums if client.welcome else None
        try:
            await self.send_inventory(dict(server_checksums) if server_checksums is not None else None,
                                      on_connect=True)
        except TimeoutError:
            log.warning("inventory not acknowledged in time; will retry on the next check")
        client.spawn(self.inventory_loop())
        await self.flush_health()


def attach(reporter: Reporter) -> None:
    """Route the inventory and health replies of ``reporter.client`` to ``reporter``; sample while it runs."""
    client = reporter.client

    async def on_inventory_ack(_client: AgentClient, msg: InventoryAck) -> None:
        reporter.on_reply(msg.in_reply_to, msg)

    async def on_health_ack(_client: AgentClient, msg: HealthAck) -> None:
        reporter.on_reply(msg.in_reply_to, msg)

    async def on_error(_client: AgentClient, msg: Error) -> None:  # wakes the batch or report it refuses
        if msg.in_reply_to is not None:
            reporter.on_reply(msg.in_reply_to, msg)

    async def on_inventory_request(c: AgentClient, msg: InventoryRequest) -> None:
        if not reporter.on_inventory_request(msg):
            c.spawn(reporter.resend_inventory())

    client.register(InventoryAck, on_inventory_ack)
    client.register(HealthAck, on_health_ack)
    client.register(Error, on_error)
    client.register(InventoryRequest, on_inventory_request)
    client.on_ready.append(reporter.on_ready)
    client.background.append(reporter.sample_forever)
    client.on_stop.append(reporter.stop)


def _undelivered(exc: Exception) -> str:
    """Why an inventory did not get through, never empty (a timed-out wait raises a bare TimeoutError)."""
    if isinstance(exc, TimeoutError) and not str(exc):
        return f"timeout after {ACK_TIMEOUT_S:.0f} s without inventory.ack"
    return reason(exc)
