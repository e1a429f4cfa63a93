"""Maintenance tasks under approver-signed TaskAuthorizations, with real processes.

One org for the module, made as an administrator would (``helpline trust init/keygen/certify/revoke`` on a
"workstation" directory, ``helpline trust publish`` to a real ``helpline server``), and a real ``helpline agent
run`` enrolled with ``--root-sha256``. Approvers write a task body, ``helpline approve draft`` wraps it, each signs
it locally with ``helpline approve sign``, ``helpline approve submit`` uploads it, and ``helpline admin task run
--document`` makes the server deliver it.

The server is then used as an attacker would: it owns the data directory, the database (changed here through the
server's own database layer, as ``helpline admin`` opens it), the CLI and an admin's API token — not the org root
key and not an approver's key. Whatever it sends, nothing runs that two approvers did not sign for this device, each
occurrence runs at most once (also across an agent restart), and every refusal reaches the task's result and the
device's own audit log with its reason.

Last, the upgrade of an installation from before the org root: an agent enrolled under the old server-held grant
key takes the root once from ``helpline trust adopt``'s hand-over, and the old key is worthless from then on.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.tasks.service import local_zone
from common.config import load_config
from helpline.commands.common import with_database
from server.config import ServerConfig
from tests import pg_store
from tests.procs import free_port, helpline, spawn, wait_for, wait_for_port
from tests.test_authority_sessions import PASSPHRASE, certify, init_server_pki, revocations
from tests.test_authority_sessions import Org as SessionsOrg

pytestmark = pytest.mark.timeout(420)

SCRIPT = 'echo "$(date +%s) $2" >> "$1"\n'
EVIL = 'echo pwned >> "$1"\n'


@dataclass
class World(SessionsOrg):
    """The module's org, server and agent; the agent process can be restarted."""

    agent_env: dict[str, str] = field(default_factory=dict)
    agents: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    data: Path = Path()
    counter: int = 0

    def start_agent(self, state: Path | None = None, log: str = "agent.log") -> None:
        self.agents.enter_context(spawn("agent", "run", "--state", str(state or self.agent_state),
                                        log=self.tmp / log, env=self.agent_env))

    def stop_agents(self) -> None:
        self.agents.close()
        self.agents = contextlib.ExitStack()

    # --- what the attacker (and the test) do with the server's database ---------------------------

    def sql(self, statement: str, args: tuple[Any, ...] = ()) -> Any:
        config = load_config(ServerConfig, self.config, section="server")

        async def work(db: Any) -> Any:
            if statement.lstrip().upper().startswith("SELECT"):
                return [dict(r) for r in await db.fetchall(statement, args)]
            return await db.execute(statement, args)

        return with_database(config, work)

    # --- documents and tasks --------------------------------------------------------------------

    def name(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}-{self.counter}"

    def authorize(self, task_id: str, script: str, marker: Path, *, signers: tuple[str, ...] = ("alice", "bob"),
                  **changes: Any) -> Path:
        """Alice writes the task body, ``approve draft`` wraps it, ``signers`` sign it locally, it is submitted."""
        now = int(time.time())
        body: dict[str, Any] = {
            "task_id": task_id, "action": "script", "script_sha256": hashlib.sha256(script.encode()).hexdigest(),
            "params": {"interpreter": "sh", "args": [str(marker), task_id]}, "devices": [self.device_id],
            "not_before": now - 600, "not_after": now + 3 * 3600, "issuer": "Alice", "issued_at": now,
            "reason": "overnight maintenance"}
        body.update(changes)
        source = self.tmp / "workstation" / f"{task_id}.body.json"
        source.write_text(json.dumps(body))
        document = self.tmp / "workstation" / f"{task_id}.json"
        helpline("approve", "draft", str(source), "--kind", "task", "--out", str(document))
        for signer in signers:
            helpline("approve", "sign", str(document), *self.signer(signer), "--yes")
        self.cli("approve", "submit", str(document), *self.server_args(), user="admin")
        return document

    def script(self, text: str = SCRIPT) -> Path:
        path = self.tmp / "workstation" / self.name("script")
        path.write_text(text)
        return path

    def run_task(self, document_id: str, script: Path, *args: str, command: str = "run",
                 device: str | None = None) -> str:
        """``helpline admin task run|schedule`` on the server's machine; returns the task id."""
        out = helpline("admin", "task", command, "--config", str(self.config), "--device", device or self.device_id,
                       "--document", document_id, "--script", str(script), *args, env=self.env).stdout
        return out.split()[1].rstrip(":")

    def runs(self, task_id: str) -> list[dict[str, Any]]:
        status, body = self.call("GET", f"/api/v1/tasks/{task_id}", "admin")
        assert status == 200, body
        return list(body["runs"])

    def finished(self, task_id: str, count: int = 1) -> list[dict[str, Any]]:
        """Wait until ``task_id`` has ``count`` finished runs; return its runs (oldest first)."""
        final = {"succeeded", "failed", "timed_out", "refused", "cancelled", "missed", "skipped"}
        seen: list[list[dict[str, Any]]] = [[]]

        def done() -> bool:
            seen[0] = self.runs(task_id)
            return sum(r["status"] in final for r in seen[0]) >= count

        wait_for(done, timeout=60, what=f"{count} finished run(s) of {task_id}")
        return sorted(seen[0], key=lambda r: r["sent_at"] or 0)

    def release(self, task_id: str) -> None:
        """Let the task's held-back runs go out now (they were made with a start time far ahead)."""
        self.sql("UPDATE task_runs SET not_before = 0 WHERE task_id = ? AND status = 'queued'", (task_id,))

    def task_events(self, document_id: str) -> list[dict[str, Any]]:
        return [e for e in self.device_audit() if e["event"].startswith("task.") and e["document_id"] == document_id]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("authority-tasks")
    (tmp / "pass.txt").write_text(PASSPHRASE + "\n")
    (tmp / "workstation").mkdir()
    data = tmp / "data"
    init_server_pki(data / "pki")
    agent_port, console_port = free_port(), free_port()
    config = tmp / "helpline.toml"
    database = ""
    if pg_store.enabled():
        url = pg_store.url_for(data)
        asyncio.run(pg_store.ensure_schema(url))
        database = f'database_url = "{url}"\n'
    config.write_text(f'[server]\ndata_dir = "{data}"\nhost = "127.0.0.1"\nkeepalive_s = 5.0\n{database}')
    env = {"HELPLINE_AGENT_PORT": str(agent_port), "HELPLINE_CONSOLE_PORT": str(console_port)}
    trust = tmp / "workstation" / "root"
    out = helpline("trust", "init", "--out", str(trust), "--passphrase-file", str(tmp / "pass.txt")).stdout
    root_fingerprint = out.split("root fingerprint (sha256): ")[1].split()[0]
    world = World(tmp, config, env, f"https://localhost:{console_port}", data / "pki" / "ca.pem", trust,
                  root_fingerprint, data=data, agent_env={"HELPLINE_LOGGED_IN_USERS": ""})
    for name, kind, holder in (("alice", "approver", "Alice"), ("bob", "approver", "Bob"),
                               ("desk", "revoker", "Security desk")):
        certify(world, name, kind, holder)
    revocations(world, "revocations-1.json", hours=2)
    with spawn("server", "--config", str(config), log=tmp / "server.log", env=env) as server:
        wait_for_port(console_port, server)
        admin_args = ["--config", str(config)]
        helpline("admin", "group", "create", "lab", *admin_args, env=env)
        helpline("admin", "user", "create", "admin", "--role", "admin", "--generate-password", *admin_args,
                 env=env)
        world.tokens["admin"] = helpline("admin", "user", "token", "admin", *admin_args,
                                         env=env).stdout.strip().splitlines()[-1]
        published = world.cli("trust", "publish", *world.server_args(), str(trust / "root.json"),
                              *map(str, sorted((trust / "certs").glob("*.json"))),
                              str(tmp / "workstation" / "revocations-1.json"), user="admin")
        assert "certificates: 3 added" in published, published
        words = helpline("admin", "token", "create", "--group", "lab", *admin_args, env=env).stdout.split()
        world.agent_state = tmp / "agent"
        helpline("agent", "enroll", words[3], words[4], "--ca-sha256", words[6], "--root-sha256",
                 root_fingerprint, "--state", str(world.agent_state))
        world.device_id = json.loads((world.agent_state / "agent.json").read_text())["device_id"]
        world.start_agent()
        try:
            world.wait_reported(lambda r: r["reported"] and r["unattended_ok"], "the device takes the authority")
            yield world
        finally:
            world.stop_agents()


def test_a_script_two_approvers_signed_runs_once_and_replays_do_not_run_it_again(world: World) -> None:
    """Alice and Bob sign a one-off script task for this device; it runs once. The server delivering the same
    document again — as a new task, and again after the agent restarted — is refused: the occurrence ran."""
    marker = world.tmp / "once.log"
    script = world.script()
    world.authorize("task-once-1", SCRIPT, marker)
    first = world.run_task("task-once-1", script)
    (run,) = world.finished(first)
    assert run["status"] == "succeeded" and run["exit_code"] == 0, run
    assert marker.read_text().count("task-once-1") == 1
    (accepted,) = world.task_events("task-once-1")
    assert accepted["event"] == "task.accepted" and accepted["approvers"] == ["Alice", "Bob"]
    assert accepted["occurrence"] == "task-once-1@once" and accepted["run_id"] == run["run_id"]

    replayed = world.run_task("task-once-1", script)
    (again,) = world.finished(replayed)
    expected = "already run on this device: occurrence task-once-1@once runs at most once"
    assert again["status"] == "refused" and expected in again["reason"], again
    world.stop_agents()  # the replay ledger is on the device's disk: a restart does not forget it
    world.start_agent()
    world.wait_reported(lambda r: r["unattended_ok"], "the restarted device takes the authority")
    after_restart = world.run_task("task-once-1", script)
    (third,) = world.finished(after_restart)
    assert third["status"] == "refused" and expected in third["reason"], third
    assert marker.read_text().count("task-once-1") == 1
    events = world.task_events("task-once-1")
    assert [e["event"] for e in events] == ["task.accepted", "task.refused", "task.refused"]
    assert all(expected in e["reason"] for e in events[1:])
    assert {e["run_id"] for e in events[1:]} == {again["run_id"], third["run_id"]}


def _occurrences(minute: int, now: float) -> tuple[float, float]:
    """The last two past occurrences of ``<minute> * * * *`` on the device's clock (epoch seconds)."""
    zone = local_zone()
    local = datetime.fromtimestamp(now, zone)
    last = local.replace(minute=minute, second=0, microsecond=0)
    if last.timestamp() > now:
        last = datetime.fromtimestamp(last.timestamp() - 3600, zone).replace(minute=minute)
    return last.timestamp(), datetime.fromtimestamp(last.timestamp() - 3600, zone).replace(minute=minute).timestamp()


def test_a_recurring_schedule_runs_each_occurrence_at_most_once(world: World) -> None:
    """An hourly schedule the approvers signed: the occurrence the server fires runs; the same occurrence fired
    again is refused; an earlier real occurrence runs; a time that is no occurrence of the signed schedule is
    refused."""
    now = time.time()
    minute = datetime.fromtimestamp(now - 180, local_zone()).minute
    latest, earlier = _occurrences(minute, now)
    assert now - 3600 < latest <= now - 60 and earlier == latest - 3600
    marker = world.tmp / "hourly.log"
    script = world.script()
    schedule = f"{minute} * * * *"
    world.authorize("task-hourly-1", SCRIPT, marker, schedule=schedule, not_before=int(now) - 3 * 3600)
    # A delivery window of 6 h: the server may deliver an occurrence that late (the device allows 6 h too).
    task_id = world.run_task("task-hourly-1", script, "--window", "6h", command="schedule")
    wait_for(lambda: bool(world.sql("SELECT next_due FROM task_schedule_state WHERE task_id = ?", (task_id,))),
             timeout=30, what="the server's schedule state")
    outcomes: list[dict[str, Any]] = []
    for count, occurrence in enumerate((latest, latest, earlier, latest + 30), 1):
        # What a server (honest or not) does to fire an occurrence: set the device's next due time.
        world.sql("UPDATE task_schedule_state SET next_due = ? WHERE task_id = ?", (occurrence, task_id))
        outcomes = world.finished(task_id, count)
    assert [r["due_at"] for r in outcomes] == [latest, latest, earlier, latest + 30]
    assert [r["status"] for r in outcomes] == ["succeeded", "refused", "succeeded", "refused"], outcomes
    assert f"occurrence task-hourly-1@{int(latest)} runs at most once" in outcomes[1]["reason"]
    assert "not an occurrence of the signed schedule" in outcomes[3]["reason"]
    assert marker.read_text().count("task-hourly-1") == 2
    events = world.task_events("task-hourly-1")
    assert [(e["event"], e["occurrence"]) for e in events] == [
        ("task.accepted", f"task-hourly-1@{int(latest)}"), ("task.refused", f"task-hourly-1@{int(latest)}"),
        ("task.accepted", f"task-hourly-1@{int(earlier)}"), ("task.refused", f"task-hourly-1@{int(latest + 30)}")]
    world.sql("UPDATE tasks SET status = 'cancelled' WHERE id = ?", (task_id,))


def _refused(world: World, task_id: str, document_id: str, expected: str) -> None:
    (run,) = world.finished(task_id)
    assert run["status"] == "refused" and expected in run["reason"], run
    (event,) = world.task_events(document_id)
    assert event["event"] == "task.refused" and event["reason"] == run["reason"], event


def test_runs_that_are_not_what_two_approvers_signed_for_this_device_now_are_refused(world: World) -> None:
    """The server changes the script bytes or the parameters after approval, names a document for another device,
    one that expired, or one that only Alice signed: each is refused on the device, nothing runs, and the reason is
    in the task's result and in the device's audit."""
    marker = world.tmp / "never.log"
    script = world.script()
    later = datetime.fromtimestamp(time.time() + 3600).isoformat()  # made first, released after the change
    cases: list[tuple[str, str, str]] = []

    world.authorize("task-tamper-1", SCRIPT, marker)
    task_id = world.run_task("task-tamper-1", script, "--at", later)
    world.sql("UPDATE tasks SET script = ? WHERE id = ?", (EVIL, task_id))
    world.release(task_id)
    cases.append((task_id, "task-tamper-1", "the script is not the one the approvers signed: its SHA-256 is "
                                            f"{hashlib.sha256(EVIL.encode()).hexdigest()}"))

    world.authorize("task-params-1", SCRIPT, marker)
    task_id = world.run_task("task-params-1", script, "--at", later)
    world.sql("UPDATE tasks SET params = ? WHERE id = ?",
              (json.dumps({"interpreter": "bash", "args": [str(marker), "task-params-1"]}), task_id))
    world.release(task_id)
    cases.append((task_id, "task-params-1", "the parameters are not the ones the approvers signed"))

    world.authorize("task-target-1", SCRIPT, marker)
    world.authorize("task-elsewhere-1", SCRIPT, marker, devices=[], groups=["accounting"])
    task_id = world.run_task("task-target-1", script, "--at", later)
    world.sql("UPDATE tasks SET document_id = 'task-elsewhere-1' WHERE id = ?", (task_id,))
    world.release(task_id)
    cases.append((task_id, "task-elsewhere-1", "task task-elsewhere-1 does not concern this device"))

    now = int(time.time())
    world.authorize("task-expired-1", SCRIPT, marker, not_before=now - 7200, not_after=now - 3600)
    cases.append((world.run_task("task-expired-1", script), "task-expired-1", "task task-expired-1 expired at"))

    world.authorize("task-alice-1", SCRIPT, marker, signers=("alice",))
    cases.append((world.run_task("task-alice-1", script), "task-alice-1",
                  "task task-alice-1 needs 2 distinct approvers, has 1"))

    for task_id, document_id, expected in cases:
        _refused(world, task_id, document_id, expected)
    assert not marker.exists()


def test_an_attacker_with_the_servers_data_directory_cannot_make_any_task_run(world: World) -> None:
    """Everything under the server's data directory holds no key that authorizes a task (no grant.key any more);
    approvers the attacker certified with their own root, an approved document whose body they edited, and the old
    server-side signing commands all get nothing: the evil script never runs."""
    pki = world.data / "pki"
    assert not (pki / "grant.key").exists() and not (pki / "grant.pub").exists()
    for path in world.data.rglob("*"):
        if path.is_file() and b"PRIVATE KEY" in path.read_bytes()[:4096]:
            with contextlib.suppress(ValueError, TypeError):
                key = serialization.load_pem_private_key(path.read_bytes(), password=None)
                assert not isinstance(key, Ed25519PrivateKey), f"{path} holds an Ed25519 key"
    gone = helpline("admin", "script", "sign", str(world.script(EVIL)), "--config", str(world.config), check=False)
    assert gone.returncode != 0 and "invalid choice" in gone.stderr
    assert world.call("POST", "/api/v1/grants", "admin", {"groups": ["lab"]})[0] == 404
    marker = world.tmp / "evil.log"
    evil = world.script(EVIL)

    # 1. Approvers of the attacker's own root, uploaded as certificates, sign the evil task.
    attacker = world.tmp / "attacker"
    attacker.mkdir()
    helpline("trust", "init", "--out", str(attacker / "root"), "--passphrase-file", str(world.tmp / "pass.txt"))
    keys = []
    for name in ("mallory", "trudy"):
        key = attacker / f"{name}.key"
        helpline("trust", "keygen", "--out", str(key), "--passphrase-file", str(world.tmp / "pass.txt"))
        from certs import ceremony
        from protocol.authority import key_fingerprint

        fingerprint = key_fingerprint(ceremony.load_public_key_pem(key.with_name(key.name + ".pub").read_bytes()))
        helpline("trust", "certify", "--dir", str(attacker / "root"), "--kind", "approver", "--name", name.title(),
                 "--public-key", f"{key}.pub", "--days", "30", "--fingerprint", fingerprint, "--id", f"{name}-0001",
                 "--passphrase-file", str(world.tmp / "pass.txt"))
        keys.append((key, attacker / "root" / "certs" / f"{name}-0001.json"))
    world.cli("trust", "publish", *world.server_args(), *map(str, (attacker / "root" / "certs").glob("*.json")),
              user="admin")
    now = int(time.time())
    body = attacker / "body.json"
    body.write_text(json.dumps({"task_id": "task-evil-1", "action": "script", "devices": [world.device_id],
                                "script_sha256": hashlib.sha256(EVIL.encode()).hexdigest(),
                                "params": {"interpreter": "sh", "args": [str(marker), "x"]},
                                "not_before": now - 60, "not_after": now + 3600, "issuer": "Mallory",
                                "issued_at": now}))
    document = attacker / "task.json"
    helpline("approve", "draft", str(body), "--kind", "task", "--out", str(document))
    for key, cert in keys:
        helpline("approve", "sign", str(document), "--key", str(key), "--cert", str(cert), "--passphrase-file",
                 str(world.tmp / "pass.txt"), "--yes")
    world.cli("approve", "submit", str(document), *world.server_args(), user="admin")
    forged = world.run_task("task-evil-1", evil)
    _refused(world, forged, "task-evil-1",
             "approval refused: credential mallory-0001: certificate is not signed by this device's root")

    # 2. A document Alice and Bob really approved, its body edited in the database to name the evil script.
    import msgspec

    from protocol.authority import TaskAuthorization, canonical_bytes, decode_body

    world.authorize("task-edited-1", SCRIPT, world.tmp / "benign.log")
    (row,) = world.sql("SELECT body FROM authority_documents WHERE document_id = 'task-edited-1'")
    original = decode_body("task", row["body"])
    assert isinstance(original, TaskAuthorization)
    edited = msgspec.structs.replace(original, script_sha256=hashlib.sha256(EVIL.encode()).hexdigest(),
                                     params={"interpreter": "sh", "args": [str(marker), "task-edited-1"]})
    world.sql("UPDATE authority_documents SET body = ? WHERE document_id = 'task-edited-1'",
              (canonical_bytes(edited).decode(),))
    _refused(world, world.run_task("task-edited-1", evil), "task-edited-1",
             "approval refused: signature of alice-credential (Alice) does not verify over this task")
    assert not marker.exists() and not (world.tmp / "benign.log").exists()


def test_an_agent_enrolled_under_the_old_grant_key_takes_the_root_once(world: World) -> None:
    """Upgrade: a device enrolled before the org root pinned the server's grant.pub and no root, so it honours no
    task. ``trust adopt`` makes the old key sign a hand-over to the root, once; the device pins the root, deletes
    grant.pub, runs approved tasks — and the old key (which an attacker may have copied) moves nothing any more."""
    # The installation as it was: the server's old key in pki/, its public half pinned by an enrolled agent.
    legacy = Ed25519PrivateKey.generate()
    old_key = world.data / "pki" / "grant.key"
    old_key.write_bytes(legacy.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()))
    old_key.chmod(0o600)
    words = helpline("admin", "token", "create", "--group", "lab", "--config", str(world.config),
                     env=world.env).stdout.split()
    state = world.tmp / "old-agent"
    helpline("agent", "enroll", words[3], words[4], "--ca-sha256", words[6], "--state", str(state))
    grant_pub = state / "grant.pub"
    grant_pub.write_bytes(legacy.public_key().public_bytes(serialization.Encoding.PEM,
                                                           serialization.PublicFormat.SubjectPublicKeyInfo))
    old_device = json.loads((state / "agent.json").read_text())["device_id"]
    world.start_agent(state, "old-agent.log")

    def report() -> dict[str, Any]:
        status, body = world.call("GET", f"/api/v1/devices/{old_device}/authority", "admin")
        assert status == 200, body
        return dict(body)

    seen: list[dict[str, Any]] = [{}]

    def reported(predicate: Callable[[dict[str, Any]], bool]) -> Callable[[], bool]:
        def check() -> bool:
            seen[0] = report()
            return seen[0]["reported"] and predicate(seen[0])
        return check

    wait_for(reported(lambda r: not r["unattended_ok"]), timeout=30, what="the old device reports")
    assert seen[0]["root_fingerprint"] is None and "without a trust root fingerprint" in seen[0]["problem"]

    # The one-time procedure on the administrator's workstation (README: "Upgrading from server-held grants").
    copied = world.tmp / "workstation" / "old-grant.key"
    copied.write_bytes(old_key.read_bytes())
    stolen = old_key.read_bytes()  # what an intruder may have copied before the key was destroyed
    adopted = helpline("trust", "adopt", "--legacy-grant-key", str(copied), "--root",
                       str(world.trust / "root.json")).stdout
    handover = world.trust / "handover.json"
    assert world.root_fingerprint in adopted and "shred -u" in adopted and handover.exists()
    again = helpline("trust", "adopt", "--legacy-grant-key", str(copied), "--root", str(world.trust / "root.json"),
                     check=False)
    assert again.returncode == 1 and "signed once" in again.stderr
    world.cli("trust", "publish", *world.server_args(), str(handover), user="admin")
    for path in (copied, old_key):
        path.unlink()  # shred -u in real life

    wait_for(reported(lambda r: r["unattended_ok"]), timeout=30, what="the old device pins the root")
    assert seen[0]["root_fingerprint"] == world.root_fingerprint
    assert not grant_pub.exists()
    assert json.loads((state / "agent.json").read_text())["trust_root_sha256"] == world.root_fingerprint
    from agent.authority.audit import verify as verify_audit

    audit_file = state / "device-audit.jsonl"
    assert verify_audit(audit_file).intact
    events = [json.loads(line) for line in audit_file.read_text().splitlines()]
    assert [e["event"] for e in events if e["event"] in ("root.adopted", "legacy_key.removed")] == [
        "root.adopted", "legacy_key.removed"]

    # It honours approved tasks now.
    marker = world.tmp / "upgraded.log"
    script = world.script()
    world.authorize("task-upgraded-1", SCRIPT, marker, devices=[old_device])
    (run,) = world.finished(world.run_task("task-upgraded-1", script, device=old_device))
    assert run["status"] == "succeeded" and marker.read_text().count("task-upgraded-1") == 1

    # The stolen old key signs a hand-over to the intruder's root, relayed in place of the real one: refused.
    from certs.legacy import load_legacy_private_key, sign_handover
    from protocol.authority import RootInfo

    evil_root = world.tmp / "intruder-root"
    helpline("trust", "init", "--out", str(evil_root), "--passphrase-file", str(world.tmp / "pass.txt"))
    evil_info = json.loads((evil_root / "root.json").read_text())
    import msgspec

    forged = sign_handover(load_legacy_private_key(stolen), msgspec.convert(evil_info, RootInfo), now=time.time())
    (evil_root / "handover.json").write_bytes(msgspec.json.encode(forged))
    world.cli("trust", "publish", *world.server_args(), str(evil_root / "root.json"), str(evil_root / "handover.json"),
              "--replace-root", user="admin")
    try:
        wait_for(reported(lambda r: not r["unattended_ok"]), timeout=30, what="the device refuses the intruder's root")
        assert seen[0]["root_fingerprint"] == world.root_fingerprint
        assert seen[0]["problem"].startswith("the server offered another root")
        assert json.loads((state / "agent.json").read_text())["trust_root_sha256"] == world.root_fingerprint
    finally:
        world.cli("trust", "publish", *world.server_args(), str(world.trust / "root.json"), "--replace-root",
                  user="admin")
    wait_for(reported(lambda r: r["unattended_ok"]), timeout=30, what="the real root again")
