"""The signer's allow-list: a new token cuts a node's old keys off, and every read-modify-write of ``nodes.json``
(the signer's renewals, ``certs signer add-node``/``remove-node`` in other processes) holds its file lock.

Real signer process, real CLI processes, real TLS 1.3. Waiting on the lock is observed in ``/proc/locks``
(a blocked ``flock`` is listed there with ``->``), not guessed with a sleep.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from certs.delegation import SignerPaths, load_nodes, nodes_locked, save_nodes
from certs.node_link import SignerLink, SignerRefused, renew
from certs.pki import CertificateAuthority
from tests.harness import wait_until
from tests.procs import HELPLINE, helpline, wait_for
from tests.test_pki_delegation import _join, running_signer


@pytest.fixture
def signer(tmp_path: Path) -> Iterator[dict[str, Path | str]]:
    with running_signer(tmp_path) as made:
        yield made


def _waits_for_a_lock(pid: int) -> bool:
    """True if process ``pid`` is blocked in ``flock`` (a ``->`` line of /proc/locks)."""
    for line in Path("/proc/locks").read_text().splitlines():
        parts = line.split()
        if len(parts) > 5 and parts[1] == "->" and parts[5] == str(pid):
            return True
    return False


async def test_a_new_token_cuts_off_every_intermediate_issued_before_it(tmp_path: Path,
                                                                        signer: dict[str, Path | str]) -> None:
    """A node's key is stolen: 'add-node' again (a new token) refuses renewals proven by any earlier intermediate
    at once, and after the node joins with the token only its new intermediate proves a renewal."""
    pki = tmp_path / "srv" / "pki"
    _join(tmp_path, signer, pki)
    link = SignerLink.load(pki)
    assert link is not None
    first = CertificateAuthority.load(pki)
    stolen = await renew(pki, link, current=first, now=datetime.now(UTC))  # the thief holds this one's key
    _join(tmp_path, signer, pki)  # re-enrolled: a new token, and the real node joins with it
    rejoined = CertificateAuthority.load(pki)
    for old in (first, stolen):
        with pytest.raises(SignerRefused, match="prove the request"):
            await renew(pki, link, current=old, now=datetime.now(UTC))
    after = await renew(pki, link, current=rejoined, now=datetime.now(UTC))  # the real node renews on
    assert after.certificate not in (first.certificate, stolen.certificate, rejoined.certificate)

    helpline("certs", "signer", "add-node", "--dir", str(signer["dir"]), "--node", "node-a",
             "--server-name", "localhost")  # a token issued but not used yet: already no old proof is good
    with pytest.raises(SignerRefused, match="prove the request"):
        await renew(pki, link, current=after, now=datetime.now(UTC))


def test_remove_node_waits_for_a_read_modify_write_in_progress(tmp_path: Path,
                                                               signer: dict[str, Path | str]) -> None:
    """A 'certs signer remove-node' process started while the allow-list is being rewritten (as by a renewal) waits
    for it, then removes the node: the removal is not lost."""
    _join(tmp_path, signer, tmp_path / "srv" / "pki")
    paths = SignerPaths(Path(signer["dir"]))
    with nodes_locked(paths):
        nodes = load_nodes(paths)
        proc = subprocess.Popen([*HELPLINE, "certs", "signer", "remove-node", "--dir", str(paths.directory),
                                 "--node", "node-a"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            wait_for(lambda: _waits_for_a_lock(proc.pid), timeout=60, what="remove-node waiting for the lock")
            nodes["node-a"].serials = ["00ff", *nodes["node-a"].serials[:1]]  # a renewal's write
            save_nodes(paths, nodes)
        except BaseException:
            proc.kill()  # by PID: the test started it
            proc.wait(timeout=60)
            raise
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "node-a" not in load_nodes(paths)


async def test_the_signer_renews_under_the_lock_add_node_holds(tmp_path: Path,
                                                               signer: dict[str, Path | str]) -> None:
    """A renewal reaching the signer while another process rewrites the allow-list waits for it, and sees its
    result: the node removed meanwhile is refused."""
    pki = tmp_path / "srv" / "pki"
    _join(tmp_path, signer, pki)
    link = SignerLink.load(pki)
    assert link is not None
    current = CertificateAuthority.load(pki)
    paths = SignerPaths(Path(signer["dir"]))
    with nodes_locked(paths):  # as 'certs signer remove-node' does, in this process
        asking = asyncio.create_task(renew(pki, link, current=current, now=datetime.now(UTC)))
        await wait_until(lambda: _waits_for_a_lock(int(str(signer["pid"]))) or asking.done(), timeout=60,
                         what="the signer waiting for the allow-list lock")
        assert not asking.done(), "the signer renewed without waiting for the allow-list's lock"
        nodes = load_nodes(paths)
        del nodes["node-a"]
        save_nodes(paths, nodes)
    with pytest.raises(SignerRefused, match="allow-list"):
        await asyncio.wait_for(asking, timeout=60)
    assert CertificateAuthority.load(pki).certificate == current.certificate
