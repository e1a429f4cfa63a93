"""Grant records: create, approve (four-eyes), revoke, list; signing with the org grant key.

Every change is audited and published as a ``grant.changed`` event in the same
transaction, so the live server (also when the change came from the CLI) pushes it to
the agents within the event watcher's poll interval.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from certs.grants import load_grant_private_key, sign_grant
from protocol.grants import Grant, SignedGrant, Window, parse_document

from .. import audit, events
from ..errors import ApiError
from ..store import Database, Row, Transaction

GRANT_CHANGED = "grant.changed"


@dataclass(frozen=True)
class GrantRequest:
    """What an administrator asks for (API body or CLI flags)."""

    devices: list[str]
    groups: list[str]
    technicians: list[str]
    roles: list[str]
    actions: list[str]
    windows: list[dict[str, Any]]
    not_before: float
    not_after: float
    reason: str = ""


def new_grant_id() -> str:
    return "g-" + secrets.token_hex(8)


def build(request: GrantRequest, issuer: str, *, now: float | None = None) -> Grant:
    """Validate a request into an (unsigned, unapproved) grant document."""
    now = time.time() if now is None else now
    if not request.devices and not request.groups:
        raise ApiError(400, "invalid", "a grant needs at least one device or group")
    if not request.technicians and not request.roles:
        raise ApiError(400, "invalid", "a grant needs at least one technician or role")
    if request.not_after <= request.not_before or request.not_after <= now:
        raise ApiError(400, "invalid", "not_after must be in the future and after not_before")
    try:
        return msgspec.convert({
            "grant_id": new_grant_id(), "devices": request.devices, "groups": request.groups,
            "technicians": request.technicians, "roles": request.roles, "actions": request.actions,
            "windows": request.windows, "not_before": request.not_before, "not_after": request.not_after,
            "issuer": issuer, "issued_at": now, "reason": request.reason,
        }, Grant)
    except msgspec.ValidationError as exc:
        raise ApiError(400, "invalid", f"invalid grant: {exc}") from exc


async def _sign(key_path: Path, grant: Grant) -> SignedGrant:
    key = await asyncio.to_thread(load_grant_private_key, key_path)
    return sign_grant(key, grant)


async def create(db: Database, key_path: Path, grant: Grant, *, actor: str, four_eyes: bool) -> Row:
    """Store a new grant: pending approval (four-eyes) or signed and active at once."""
    signed = None if four_eyes else await _sign(key_path, grant)
    status = "pending" if four_eyes else "active"
    async with db.transaction() as tx:
        await tx.execute(
            "INSERT INTO grants (grant_id, document, signature, status, devices, groups, created_by, created_at,"
            " not_after) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (grant.grant_id, signed.document if signed else msgspec.json.encode(grant).decode(),
             signed.signature if signed else None, status, json.dumps(grant.devices), json.dumps(grant.groups),
             actor, time.time(), grant.not_after),
        )
        await audit.append_in(tx, actor, "grant.create", grant.grant_id, _audit_details(grant, status))
        if status == "active":
            await events.publish_in(tx, GRANT_CHANGED, grant.grant_id, {"status": "active"})
    row = await get(db, grant.grant_id)
    assert row is not None
    return row


async def approve(db: Database, key_path: Path, grant_id: str, *, actor: str, approver: str) -> Row:
    """Second administrator approves: the document gains ``approver`` and is signed."""
    row = await get(db, grant_id)
    if row is None:
        raise ApiError(404, "not_found", f"no grant {grant_id}")
    if row["status"] != "pending":
        raise ApiError(409, "conflict", f"grant {grant_id} is {row['status']}, not pending")
    grant = parse_document(row["document"])
    if approver == grant.issuer:
        raise ApiError(403, "four_eyes", "a grant must be approved by someone other than its issuer")
    signed = await _sign(key_path, msgspec.structs.replace(grant, approver=approver))
    async with db.transaction() as tx:
        changed = await tx.execute(
            "UPDATE grants SET document = ?, signature = ?, status = 'active', approved_by = ?, approved_at = ?"
            " WHERE grant_id = ? AND status = 'pending'",
            (signed.document, signed.signature, actor, time.time(), grant_id),
        )
        if changed != 1:
            raise ApiError(409, "conflict", f"grant {grant_id} changed meanwhile")
        await audit.append_in(tx, actor, "grant.approve", grant_id, {"issuer": grant.issuer})
        await events.publish_in(tx, GRANT_CHANGED, grant_id, {"status": "active"})
    fresh = await get(db, grant_id)
    assert fresh is not None
    return fresh


async def revoke(db: Database, grant_id: str, *, actor: str) -> Row:
    row = await get(db, grant_id)
    if row is None:
        raise ApiError(404, "not_found", f"no grant {grant_id}")
    if row["status"] == "revoked":
        return row
    async with db.transaction() as tx:
        # Conditional: of concurrent revocations (PostgreSQL runs them at once) one is audited.
        if await tx.execute("UPDATE grants SET status = 'revoked', revoked_by = ?, revoked_at = ? WHERE grant_id = ?"
                            " AND status <> 'revoked'", (actor, time.time(), grant_id)) == 1:
            await audit.append_in(tx, actor, "grant.revoke", grant_id, {"previous_status": row["status"]})
            await events.publish_in(tx, GRANT_CHANGED, grant_id, {"status": "revoked"})
    fresh = await get(db, grant_id)
    assert fresh is not None
    return fresh


async def get(db: Database | Transaction, grant_id: str) -> Row | None:
    return await db.fetchone("SELECT * FROM grants WHERE grant_id = ?", (grant_id,))


async def list_grants(db: Database, status: str | None = None) -> list[Row]:
    if status:
        return await db.fetchall("SELECT * FROM grants WHERE status = ? ORDER BY created_at DESC", (status,))
    return await db.fetchall("SELECT * FROM grants ORDER BY created_at DESC")


def listed_devices(row: Row) -> list[str]:
    """The device ids a grant names (besides its groups)."""
    devices: list[str] = json.loads(row["devices"])
    return devices


def scope_groups(row: Row, device_group: dict[str, str]) -> set[str]:
    """Device groups a grant touches (its groups plus the groups of its listed devices)."""
    groups = set(json.loads(row["groups"]))
    groups |= {device_group[d] for d in listed_devices(row) if d in device_group}
    return groups


def covers(row: Row, device_id: str, group: str) -> bool:
    return device_id in json.loads(row["devices"]) or group in json.loads(row["groups"])


async def for_device(db: Database, device_id: str, group: str) -> tuple[list[SignedGrant], list[str]]:
    """Active signed grants and revoked grant ids that concern this device."""
    now = time.time()
    rows = await db.fetchall("SELECT * FROM grants WHERE status IN ('active', 'revoked') AND not_after > ?",
                             (now - 86400,))
    active = [SignedGrant(document=r["document"], signature=r["signature"]) for r in rows
              if r["status"] == "active" and r["not_after"] > now and covers(r, device_id, group)]
    revoked = [r["grant_id"] for r in rows if r["status"] == "revoked" and covers(r, device_id, group)]
    return active, revoked[-1000:]


def signed_of(row: Row) -> SignedGrant | None:
    if row["status"] != "active" or not row["signature"]:
        return None
    return SignedGrant(document=row["document"], signature=row["signature"])


def describe(row: Row) -> dict[str, Any]:
    grant = parse_document(row["document"])
    return {
        "grant_id": grant.grant_id, "status": row["status"], "devices": grant.devices, "groups": grant.groups,
        "technicians": grant.technicians, "roles": grant.roles, "actions": grant.actions,
        "windows": [msgspec.to_builtins(w) for w in grant.windows], "not_before": grant.not_before,
        "not_after": grant.not_after, "issuer": grant.issuer, "approver": grant.approver, "reason": grant.reason,
        "created_by": row["created_by"], "created_at": row["created_at"], "approved_by": row["approved_by"],
        "revoked_by": row["revoked_by"], "revoked_at": row["revoked_at"],
    }


def _audit_details(grant: Grant, status: str) -> dict[str, Any]:
    return {"status": status, "devices": grant.devices, "groups": grant.groups, "technicians": grant.technicians,
            "roles": grant.roles, "actions": grant.actions, "not_after": grant.not_after,
            "windows": [msgspec.to_builtins(w) for w in grant.windows]}


def parse_windows(specs: list[str]) -> list[dict[str, Any]]:
    """CLI window syntax ``mon-fri 22:00-06:00`` or ``0,1,2 08:00-18:00`` → window dicts."""
    names = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    out: list[dict[str, Any]] = []
    for spec in specs:
        try:
            days_part, hours = spec.split()
            start, end = hours.split("-")
            days: list[int] = []
            for piece in days_part.lower().split(","):
                if "-" in piece:
                    a, b = piece.split("-")
                    ia, ib = names.index(a[:3]), names.index(b[:3])
                    days.extend(range(ia, ib + 1))
                else:
                    days.append(names.index(piece[:3]) if piece[:3] in names else int(piece))
            msgspec.convert({"days": days, "start": start, "end": end}, Window)
        except (ValueError, msgspec.ValidationError) as exc:
            raise ApiError(400, "invalid", f"bad window {spec!r}: use e.g. 'mon-fri 22:00-06:00'") from exc
        out.append({"days": sorted(set(days)), "start": start, "end": end})
    return out
