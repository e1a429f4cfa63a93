"""The grants a technician may start an unattended session on a device under, as the server sees them.

The console's device page offers these in its session form. The list is only a convenience: the
server relays documents and cannot make one valid; the device checks the grant, its approvals and
the technician's proof itself when the session is requested. So the list is built from what the
server stores (open grant documents naming the device or its group, not expired by the server's
clock) and marks each with what the device last reported: whether it holds the document as
verified (``held_by_device``) or refused it, and why.
"""

from __future__ import annotations

import json
from typing import Any

from protocol.authority import UnattendedGrant
from server.authority import repository as documents
from server.store import Database

Json = dict[str, Any]


def _reported(row: Any) -> tuple[set[str], dict[str, str]]:
    """The device's last authority.status: document ids it holds, and refusals by id."""
    if row is None:
        return set(), {}
    accepted = {str(d) for d in json.loads(row["accepted"] or "[]")}
    refused: dict[str, str] = {}
    for item in json.loads(row["refused"] or "[]"):
        if isinstance(item, dict) and "document_id" in item:
            refused[str(item["document_id"])] = str(item.get("reason", ""))
    return accepted, refused


async def device_grants(db: Database, device_id: str, group: str, now: float) -> list[Json]:
    """Open grant documents naming this device or its group that have not expired, newest first."""
    accepted, refused = _reported(await documents.device_status(db, device_id))
    listed: list[Json] = []
    for row in await documents.list_documents(db):
        if row["kind"] != "grant" or row["status"] != "open" or not documents.concerns(row, device_id, group):
            continue
        body = documents.decode_or_none(documents.signed_of(row))
        if not isinstance(body, UnattendedGrant) or now >= body.not_after:
            continue
        listed.append({
            "document_id": body.grant_id, "actions": list(body.actions),
            "technician_names": list(body.technician_names), "technicians": list(body.technicians),
            "not_before": body.not_before, "not_after": body.not_after,
            "windows": len(body.windows), "issuer": body.issuer, "reason": body.reason,
            "held_by_device": body.grant_id in accepted, "device_refused": refused.get(body.grant_id),
        })
    return listed
