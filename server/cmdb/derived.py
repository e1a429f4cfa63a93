"""What the CMDB model re-derives when an inventory lands: relations, licence counts, CVE matches.

Called inside the ingest transaction with the sections the report changed, so a device's derived
state is never out of step with the inventory stored beside it.
"""

from __future__ import annotations

from collections.abc import Collection

from server.store import Transaction

from . import licences, relations, vulns


async def after_inventory(tx: Transaction, device_id: str, changed: Collection[str], now: float) -> None:
    await relations.refresh_device(tx, device_id, changed, now)
    if "software" in changed or "os" in changed:
        await licences.refresh_device(tx, device_id, now)
        await vulns.refresh_device(tx, device_id)
