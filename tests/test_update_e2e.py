"""Signed self-update end to end: a real server (in the test's loop), real agents run by the real launcher
(``helpline agent launch``) from an installation root the test creates, real artifacts built from this
checkout, manifests signed under a test org's root.

The installation starts on the base version (this checkout, 0.1.0); a release 0.2.0 is a tarball of the
same code declaring 0.2.0 (or with a broken ``helpline/cli.py``). Each case asserts what the server
records (rollout targets, the version in the device's hello), the installation root (``current``, the
markers) and the device's own audit.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import msgspec
import pytest

from server.authority import repository as documents
from server.updates import feature, repository, service
from tests.authority_helpers import make_org
from tests.harness import running_server, wait_until
from tests.procs import helpline
from tests.tasks_helpers import publish_authority
from tests.update_helpers import (
    BROKEN_CLI,
    build_artifact,
    device_audit,
    enroll_pinned,
    events,
    launched,
    manifest_for,
    release,
    roll_out,
    targets,
    wait_online,
    wait_state,
)

pytestmark = pytest.mark.timeout(600)


async def test_a_signed_update_installs_restarts_commits_and_a_downgrade_is_refused(tmp_path: Path) -> None:
    """0.2.0 signed by two approvers, uploaded and rolled out with the CLI: the agent checks it, fetches the
    tarball over mTLS, installs it beside the base, restarts into it through the launcher and commits once
    connected (the server sees 0.2.0 in its hello; the rollout is done). A signed 0.1.5 is then refused as a
    downgrade and nothing changes."""
    org = make_org()
    root = tmp_path / "opt"
    async with running_server(tmp_path / "data") as server:
        server.console_app[feature.DRIVER].tick_s = 0.3
        await publish_authority(server.db, org)
        state = await enroll_pinned(server, tmp_path / "agent", org, "lab")
        new = build_artifact(tmp_path, "0.2.0")
        signed = tmp_path / "release-0.2.0.json"
        signed.write_bytes(msgspec.json.encode(org.sign("release", manifest_for("0.2.0", new))))
        with launched(root, state, tmp_path / "agent.log") as agent:
            await wait_online(server, state.device_id, "0.1.0")
            data = ["--data", str(server.config.data_dir)]
            out = helpline("admin", "release", "upload", "0.2.0", "--manifest", str(signed), "--artifact", str(new),
                           *data).stdout
            assert "stored the manifest release:0.2.0 (2 approval(s))" in out and "(stored)" in out
            out = helpline("admin", "release", "rollout", "0.2.0", "--device", state.device_id, *data).stdout
            rollout_id = out.split()[1].rstrip(":")
            await wait_state(server, rollout_id, state.device_id, "committed")
            await wait_online(server, state.device_id, "0.2.0")
            assert agent.poll() is None
            seen: list[dict[str, object]] = []

            def rollout_done() -> bool:  # the driver's next tick (0.3 s) closes the rollout after the commit
                seen[:] = [json.loads(helpline("admin", "release", "status", rollout_id, "--json", *data).stdout)]
                return seen[0]["status"] == "done"

            await wait_until(rollout_done, timeout=30, interval=0.5, what="the rollout done")
            assert seen[0]["states"] == {"committed": 1}, seen
            assert os.readlink(root / "current") == "versions/0.2.0"
            assert (root / "versions" / "0.2.0" / "helpline" / "cli.py").is_file()
            assert not (root / "update" / "trial.json").exists()
            outcome = json.loads((root / "update" / "outcome.json").read_text())
            assert outcome["state"] == "committed" and outcome["from_version"] == "(package)"
            assert events(state, "release.") == ["release.allowed"]
            assert events(state, "update.") == ["update.installed", "update.committed"]

            # A downgrade, properly signed: refused by the device, audited, nothing installed.
            old = build_artifact(tmp_path, "0.1.5")
            await release(server, org.sign("release", manifest_for("0.1.5", old)), old)
            rollout_id = await roll_out(server, "0.1.5", devices=[state.device_id])
            refused = await wait_state(server, rollout_id, state.device_id, "refused")
            assert "is not newer than the running version 0.2.0 (no downgrades)" in refused["reason"]
            # (the device's document.accepted for the new manifest may come before or after: pushed apart)
            await wait_until(lambda: events(state, "release.") == ["release.allowed", "release.refused"],
                             what="the refusal in the device's audit")
            assert os.readlink(root / "current") == "versions/0.2.0"
            assert not (root / "versions" / "0.1.5").exists()
            assert agent.poll() is None
    log = (tmp_path / "agent.log").read_text()
    assert "Traceback" not in log, log


async def test_unsigned_forged_and_substituted_updates_are_refused(tmp_path: Path) -> None:
    """What a compromised server can try, each refused by the device and audited there: a manifest nobody
    approved, one approved by a key another root certified (its certificate relayed too), and a correctly
    signed manifest whose artifact bytes the server swapped on disk (the SHA-256 differs)."""
    org, other = make_org(), make_org()
    other.certify("mallory", "approver", "Mallory")
    root = tmp_path / "opt"
    async with running_server(tmp_path / "data") as server:
        server.console_app[feature.DRIVER].tick_s = 0.3
        await publish_authority(server.db, org)
        async with server.db.transaction() as tx:  # the server relays the other org's certificate as well
            await documents.put_cert(tx, other.certs[-1], actor="user:intruder")
        state = await enroll_pinned(server, tmp_path / "agent", org, "lab")
        with launched(root, state, tmp_path / "agent.log") as agent:
            await wait_online(server, state.device_id, "0.1.0")
            cases: list[tuple[str, object, str]] = []
            unsigned = build_artifact(tmp_path, "0.3.0")
            await release(server, org.sign("release", manifest_for("0.3.0", unsigned), signers=()), unsigned)
            cases.append(("0.3.0", "release.refused", "needs 1 distinct approvers, has 0"))
            forged = build_artifact(tmp_path, "0.4.0")
            await release(server, other.sign("release", manifest_for("0.4.0", forged), signers=("mallory",)), forged)
            cases.append(("0.4.0", "release.refused", "mallory-credential"))
            swapped = build_artifact(tmp_path, "0.5.0")
            await release(server, org.sign("release", manifest_for("0.5.0", swapped)), swapped)
            manifest = manifest_for("0.5.0", swapped)
            stored = service.stored_path(server.config.data_dir, manifest.artifacts[0].sha256)
            swapped_bytes = bytearray(stored.read_bytes())  # same size, one byte changed
            swapped_bytes[len(swapped_bytes) // 2] ^= 0xFF
            stored.write_bytes(bytes(swapped_bytes))
            cases.append(("0.5.0", "update.refused", "is not the signed"))
            for version, event, reason in cases:
                rollout_id = await roll_out(server, version, devices=[state.device_id])
                refused = await wait_state(server, rollout_id, state.device_id, "refused")
                assert reason in refused["reason"], (version, refused["reason"])
                # Not necessarily the last record: the authority push may meanwhile have made the device refuse to
                # hold the next case's stored document (document.refused), which it audits too.
                records = [r for r in device_audit(state) if r["event"] == event]
                assert records and reason in records[-1]["reason"], (version, device_audit(state)[-3:])
                assert not (root / "current").exists() and not (root / "versions" / version).exists()
                assert agent.poll() is None
            assert not list((root / "update" / "download").iterdir()), "a refused download is not kept"
            await wait_online(server, state.device_id, "0.1.0")


async def test_a_broken_update_rolls_back_and_halts_the_waves(tmp_path: Path) -> None:
    """Waves by group (pilot, then lab). The pilot device installs a 0.2.0 whose program exits at once: the
    launcher rolls back to the base version, which reconnects on 0.1.0 and reports ``rolled_back`` with the
    reason; the rollout halts and the lab device is never offered the release. Then a good 0.2.1 goes to the
    pilot first and reaches the lab device only after the pilot committed."""
    org = make_org()
    async with running_server(tmp_path / "data") as server:
        server.console_app[feature.DRIVER].tick_s = 0.3
        await publish_authority(server.db, org)
        pilot = await enroll_pinned(server, tmp_path / "pilot", org, "pilot")
        lab = await enroll_pinned(server, tmp_path / "lab", org, "lab")
        broken = build_artifact(tmp_path, "0.2.0", cli=BROKEN_CLI)
        await release(server, org.sign("release", manifest_for("0.2.0", broken)), broken)
        with launched(tmp_path / "opt-pilot", pilot, tmp_path / "pilot.log") as pilot_agent, \
                launched(tmp_path / "opt-lab", lab, tmp_path / "lab.log") as lab_agent:
            await wait_online(server, pilot.device_id, "0.1.0")
            await wait_online(server, lab.device_id, "0.1.0")
            rollout_id = await roll_out(server, "0.2.0", wave_groups=[["pilot"], ["lab"]])
            rolled = await wait_state(server, rollout_id, pilot.device_id, "rolled_back")
            assert "version 0.2.0 exited with status 1 before it connected" in rolled["reason"], rolled
            await wait_online(server, pilot.device_id, "0.1.0")
            assert not (tmp_path / "opt-pilot" / "current").exists()
            assert events(pilot, "update.") == ["update.installed", "update.rolled_back"]

            async def halted() -> bool:
                row = await repository.rollout(server.db, rollout_id)
                return row is not None and row["status"] == "halted"

            await wait_until(halted, timeout=30, what="the rollout halted")
            row = await repository.rollout(server.db, rollout_id)
            assert row is not None and f"device {pilot.device_id} rolled back" in row["reason"]
            assert (await targets(server, rollout_id))[lab.device_id]["state"] == "pending"
            assert (await targets(server, rollout_id))[lab.device_id]["offered_at"] is None

            good = build_artifact(tmp_path, "0.2.1")
            await release(server, org.sign("release", manifest_for("0.2.1", good)), good)
            rollout_id = await roll_out(server, "0.2.1", wave_groups=[["pilot"], ["lab"]])
            first = await wait_state(server, rollout_id, pilot.device_id, "committed")
            second = await wait_state(server, rollout_id, lab.device_id, "committed")
            assert second["offered_at"] >= first["updated_at"], (first, second)
            await wait_online(server, lab.device_id, "0.2.1")
            await wait_online(server, pilot.device_id, "0.2.1")
            assert pilot_agent.poll() is None and lab_agent.poll() is None
            row = await repository.rollout(server.db, rollout_id)
            assert row is not None and row["wave"] == 1
