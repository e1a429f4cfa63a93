"""Device certificates for a simulated fleet: issued in-process by several processes, enrolled in one go.

Each simulated device gets what enrollment gives a real one (server/enrollment.py): an ECDSA P-256
key made "on the device", a CSR, a certificate signed by the node's issuing CA
(:meth:`certs.pki.CertificateAuthority.sign_device_csr`, the call enrollment makes) and stored with its
chain, and a ``devices`` row (:func:`server.devices.register`). Only the HTTP round trip and the
enrollment token are skipped. Signing is CPU work (~4 ms a device), so it is split over processes;
the rows go in one transaction. 3,000 devices one by one took 81 s on a loaded box.
"""

from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

from certs.pki import (
    CertificateAuthority,
    build_csr,
    certificate_serial_hex,
    generate_device_key,
    write_certificates,
    write_private_key,
)
from server import devices
from server.store import Database


class Issued(NamedTuple):
    device_id: str
    cert: str
    key: str
    serial: str
    not_after: float


def _issue_chunk(pki: str, out: str, ids: list[str]) -> list[Issued]:
    ca = CertificateAuthority.load(Path(pki))
    now = datetime.now(UTC)
    issued: list[Issued] = []
    for device_id in ids:
        key = generate_device_key()
        cert = ca.sign_device_csr(build_csr(key), device_id, now=now)
        key_path, cert_path = Path(out) / f"{device_id}.key", Path(out) / f"{device_id}.pem"
        write_private_key(key_path, key)
        write_certificates(cert_path, [cert, *ca.chain])  # as agents store it: with the intermediate
        issued.append(Issued(device_id, str(cert_path), str(key_path), certificate_serial_hex(cert),
                             cert.not_valid_after_utc.timestamp()))
    return issued


def issue(pki: Path, out: Path, ids: list[str], processes: int) -> list[Issued]:
    """Keys, CSRs and certificates for ``ids``, signed in ``processes`` processes; order kept."""
    out.mkdir(parents=True, exist_ok=True)
    chunk = max(1, min(500, len(ids) // max(1, processes * 4) + 1))
    parts = [ids[i:i + chunk] for i in range(0, len(ids), chunk)]
    with ProcessPoolExecutor(max_workers=processes, mp_context=mp.get_context("spawn")) as pool:
        results = pool.map(_issue_chunk, [str(pki)] * len(parts), [str(out)] * len(parts), parts)
        return [one for part in results for one in part]


async def enroll(db: Database, issued: list[Issued], group: str = "bench") -> None:
    """The devices' rows, as enrollment writes them, in one transaction."""
    async with db.transaction() as tx:
        await devices.ensure_group(tx, group)
        for one in issued:
            await devices.register(tx, one.device_id, group, one.serial, one.not_after, hostname=one.device_id)
