"""What the console and the device are shown of a request (one place, so both stay consistent)."""

from __future__ import annotations

from typing import Any

from protocol.requests import RequestStatus

from ..store import Database, Row


def request_view(row: Row, *, hostname: str = "") -> dict[str, Any]:
    """Schema ``SupportRequest``: the row without the device's local id."""
    view = {k: v for k, v in row.items() if k not in ("local_id", "has_screenshot", "escalated")}
    view.update(hostname=hostname, has_screenshot=bool(row["has_screenshot"]), escalated=bool(row["escalated"]),
                reopened=int(row["reopened_count"]) > 0)
    return view


async def hostnames(db: Database, device_ids: set[str]) -> dict[str, str]:
    if not device_ids:
        return {}
    ids = sorted(device_ids)[:1000]
    rows = await db.fetchall(f"SELECT id, hostname FROM devices WHERE id IN ({', '.join('?' * len(ids))})",  # noqa: S608
                             tuple(ids))
    return {r["id"]: r["hostname"] for r in rows}


async def views_of(db: Database, rows: list[Row]) -> list[dict[str, Any]]:
    names = await hostnames(db, {r["device_id"] for r in rows})
    return [request_view(r, hostname=names.get(r["device_id"], "")) for r in rows]


def status_of(row: Row) -> RequestStatus:
    """The ``request.status`` the device is sent for ``row``."""
    return RequestStatus(local_id=row["local_id"], request_id=row["id"], number=int(row["number"]),
                         state=row["state"], claimed_by=str(row["claimed_by_name"] or row["claimed_by"])[:256],
                         updated_at=float(row["updated_at"]), note=str(row["last_note"])[:4000])
